"""Rollout routing replay (R3) against none, side by side on the same samples: how often the trainer
routes a token to other experts than the rollout engine did, and how far apart their logprobs are.

Per family (tiny Qwen3-MoE and DeepSeek-V3 built with transformers, random weights) and seed: a vLLM
engine with ``return_routed_experts`` samples ``--groups`` prompts x 4 responses; then a Megatron
trainer (one process) scores the same samples twice, ``algorithm.routing_replay`` none and r3, in one
run. The trainer differs from the engine in one of two ways (``--setting``):

    noise  the trainer's router weights get a small relative perturbation (``--noise``, default 0.08),
           the way an update the engine has not seen yet, or a different kernel's rounding, moves
           near-tied scores
    bf16   the trainer computes in bfloat16 (router in fp32, as configured), the engine in float32

Also the rollout time with the routing recorded against without it (one warm engine, the same prompts,
recording switched on and off between interleaved calls). Reported per family: the share of recorded tokens whose experts differ (the routing the trainer
computed with: ``moe/route_mismatch_used``), and the mean / max |trainer logprob - engine logprob| over
the response tokens, none and r3, each as mean, min and max over the seeds, with the ratio none / r3.
Written to OUT/routing_replay[_<setting>].json and .md with the machine and the command.

  python tools/bench_routing_replay.py --out benchmarks/results                 # seeds 0-4, ~3 min
  python tools/bench_routing_replay.py --setting bf16 --out benchmarks/results  # ~3 min
  python tools/bench_routing_replay.py --smoke --out /tmp/bench                 # 1 seed, 1 family
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

FAMILIES = {
    # 8 experts top-2, softmax routing renormalised over the top-k, a dense layer 2 (mlp_only_layers)
    "qwen3_moe": dict(cls="Qwen3Moe", vocab_size=203, hidden_size=64, intermediate_size=80, moe_intermediate_size=48,
                      num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, num_hidden_layers=4,
                      mlp_only_layers=[2], num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                      tie_word_embeddings=False, rope_theta=1e6),
    # MLA (vLLM's CPU MLA kernel: kv_lora_rank + qk_rope_head_dim = 576), sigmoid group-limited routing with
    # the aux-loss-free bias, a shared expert, layer 0 dense
    "deepseek_v3": dict(cls="DeepseekV3", vocab_size=199, hidden_size=64, intermediate_size=96,
                        moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                        n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=2, q_lora_rank=48,
                        kv_lora_rank=512, qk_nope_head_dim=32, qk_rope_head_dim=64, v_head_dim=32,
                        tie_word_embeddings=False, rope_theta=10000.0, topk_method="noaux_tc", scoring_func="sigmoid"),
}


def build_model(family: str, root: str, seed: int) -> str:
    """A random tiny HF model (router weights scaled up: well-separated scores, as trained routers have)."""
    import torch
    import transformers

    spec = dict(FAMILIES[family])
    cls = spec.pop("cls")
    config = getattr(transformers, f"{cls}Config")(**spec)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{cls}ForCausalLM")(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight"):
                p.mul_(25.0)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn_like(b))
    path = os.path.join(root, f"{family}.s{seed}")
    model.save_pretrained(path)
    return path


def perturb_routers(chunks, scale: float, seed: int) -> None:
    import torch

    from r1mega.models.moe import _routers
    with torch.no_grad():
        for layer, r in _routers(chunks):
            g = torch.Generator().manual_seed(seed * 1000 + layer)
            r.weight.add_(scale * r.weight.abs().mean() * torch.randn(r.weight.shape, generator=g).to(r.weight.dtype))


def generate(path: str, prompts: list, seed: int, args) -> tuple[list, dict]:
    """The samples, with routing recorded, and the rollout time with and without recording: one warm
    engine generates the prompts ``--repeats`` times each way, interleaved (recording paused with
    ``engine.record_routing(False)``), and the fastest call of each way counts (the least disturbed
    by the machine); the same seed gives the same tokens both ways (checked)."""
    from r1mega.config.sections import RolloutConfig
    from r1mega.rollout import RolloutEngine

    cfg = RolloutConfig(max_new_tokens=args.max_new_tokens, max_model_len=64, kv_cache_memory_mb=32, seed=seed,
                        temperature=1.0)
    engine = RolloutEngine(path, cfg, skip_tokenizer=True, return_routed_experts=True)
    engine.generate(prompts, n=4, seed=seed)  # warm-up
    out, times = {}, {True: [], False: []}
    for _ in range(args.repeats):
        for record in (True, False):
            engine.record_routing(record)
            t0 = time.perf_counter()
            out[record] = engine.generate(prompts, n=4, seed=seed)
            times[record].append(time.perf_counter() - t0)
    engine.shutdown()
    if [s.response_ids for s in out[True]] != [s.response_ids for s in out[False]]:
        raise RuntimeError("recording the routing changed the sampled tokens")
    if any(s.routed_experts is not None for s in out[False]):
        raise RuntimeError("the engine recorded routing while paused")
    return out[True], {"rollout_s_recording": min(times[True]), "rollout_s_plain": min(times[False])}


def one_run(family: str, seed: int, args) -> dict:
    """Engine samples, then the trainer's none and r3 passes on them: {mode: metrics}."""
    import torch

    from r1mega.config import load_config
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy

    path = build_model(family, args.work, seed)
    arch = read_hf_config(path)
    overrides = ["parallel.distributed_optimizer=false", "trainer.micro_batch_tokens=512", "trainer.packing=padded",
                 "trainer.old_logprobs=recompute", "algorithm.routing_replay=r3", "model.max_seq_len=64"]
    if args.setting == "bf16":
        overrides.append("model.dtype=bfloat16")
    cfg = load_config(None, overrides)
    layout = init_parallel(cfg.parallel, arch, seed=seed)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(3, arch.vocab_size, (int(torch.randint(4, 17, (1,), generator=g)),), generator=g).tolist()
               for _ in range(args.groups)]
    samples, timing = generate(path, prompts, seed, args)
    chunks, arch = load_hf(path, cfg.model, layout)
    if args.setting == "noise":
        perturb_routers(chunks, args.noise, seed)
    policy = Policy(cfg, layout, arch, chunks)
    mbs = policy.pack(samples)
    out = {}
    for mode in ("none", "r3"):
        policy.replay = mode
        policy.logprobs(mbs, "old")
        d = torch.cat([(mb.old_logp - mb.rollout_logp).abs() for mb in mbs])
        st = policy.routing_stats()
        out[mode] = {"route_mismatch_used": st["moe/route_mismatch_used"], "route_mismatch": st["moe/route_mismatch"],
                     "logp_diff_mean": float(d.mean()), "logp_diff_max": float(d.max())}
    out["tokens"] = sum(len(s.response_ids) for s in samples)
    out.update(timing)
    return out


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def summarize(runs: dict) -> dict:
    """Per family and metric: none and r3 over seeds (mean, min, max), and the ratio of the means."""
    out = {}
    for family, per_seed in runs.items():
        fam = {}
        for key in ("route_mismatch_used", "logp_diff_mean", "logp_diff_max"):
            none = spread([r["none"][key] for r in per_seed.values()])
            r3 = spread([r["r3"][key] for r in per_seed.values()])
            fam[key] = {"none": none, "r3": r3,
                        "ratio": none["mean"] / r3["mean"] if r3["mean"] > 0 else float("inf")}
        over = [r["rollout_s_recording"] / r["rollout_s_plain"] for r in per_seed.values()]
        fam["rollout_time_recording_over_plain"] = spread(over)
        fam["r3_below_none_every_seed"] = all(r["r3"]["logp_diff_mean"] < r["none"]["logp_diff_mean"]
                                              for r in per_seed.values())
        out[family] = fam
    return out


def markdown(report: dict) -> str:
    def f(s, pct=False):
        k = 100 if pct else 1
        fmt = "{:.2f}%" if pct else "{:.2e}"
        return f"{fmt.format(s['mean'] * k)} [{fmt.format(s['min'] * k)}, {fmt.format(s['max'] * k)}]"

    lines = [f"# Rollout routing replay (R3) vs none: setting `{report['setting']}`", "",
             f"Machine: {report['machine']}. Seeds {report['seeds']}; mean [min, max] over seeds. Command:", "",
             f"    {report['command']}", "",
             "| family | tokens routed differently, none | R3 | mean \\|logp diff\\|, none | R3 | ratio | "
             "max \\|logp diff\\|, none | R3 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for family, s in report["summary"].items():
        lines.append(f"| {family} | {f(s['route_mismatch_used']['none'], True)} | {f(s['route_mismatch_used']['r3'], True)} | "
                     f"{f(s['logp_diff_mean']['none'])} | {f(s['logp_diff_mean']['r3'])} | "
                     f"{s['logp_diff_mean']['ratio']:.2f}x | {f(s['logp_diff_max']['none'])} | "
                     f"{f(s['logp_diff_max']['r3'])} |")
    lines += ["", "Tokens routed differently: the share of the tokens the engine recorded (prompt and response, all "
              "but each sample's last) whose top-k expert set in the trainer's forward differs from the engine's, "
              "over all MoE layers. Logprob difference: over the response tokens, trainer (old-logprob pass) vs the "
              "engine's sampling logprobs. Both modes score the same samples in one process.", "",
              f"Rollout time with the routing recorded / without (one warm engine, the same prompts and tokens, "
              f"interleaved calls, the fastest of {report['repeats']} each way; {report['groups']} prompts x 4 x up to "
              f"{report['max_new_tokens']} tokens per call):"]
    for family, s in report["summary"].items():
        o = s["rollout_time_recording_over_plain"]
        lines.append(f"- {family}: {o['mean']:.3f}x [{o['min']:.3f}, {o['max']:.3f}]")
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", choices=("noise", "bf16"), default="noise")
    p.add_argument("--noise", type=float, default=0.08, help="relative router-weight perturbation (setting noise)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--groups", type=int, default=8, help="prompts per run (4 responses each)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--repeats", type=int, default=5, help="timed rollouts per engine (the fastest counts)")
    p.add_argument("--work", default=os.path.join(REPO, "runs", "bench_routing_replay"))
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"))
    p.add_argument("--smoke", action="store_true", help="one seed, Qwen3-MoE only, 2 prompts")
    args = p.parse_args(argv)
    if args.smoke:
        args.seeds, args.families, args.groups, args.max_new_tokens, args.repeats = [0], ["qwen3_moe"], 2, 8, 1
    os.makedirs(args.work, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from r1mega.parallel import compat
    from r1mega.parallel.init import destroy_parallel
    compat.apply_vllm()
    t0 = time.time()
    runs = {f: {} for f in args.families}
    for family in args.families:
        for seed in args.seeds:
            runs[family][str(seed)] = one_run(family, seed, args)
            print(f"{family} seed {seed}: {json.dumps(runs[family][str(seed)])}", flush=True)
    destroy_parallel()
    report = {"setting": args.setting, "noise": args.noise if args.setting == "noise" else None, "seeds": args.seeds,
              "groups": args.groups, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{os.environ.get('OMP_NUM_THREADS')} threads",
              "command": "python tools/bench_routing_replay.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
              "seconds": round(time.time() - t0, 1), "runs": runs, "summary": summarize(runs)}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "routing_replay" + ("" if args.setting == "noise" else f"_{args.setting}"))
    with open(stem + ".json", "w") as fh:
        json.dump(report, fh, indent=2)
    with open(stem + ".md", "w") as fh:
        fh.write(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
