"""The trainer's step: r1mega's Megatron policy against a plain transformers + torch eager step.

Both systems train the same random Qwen2.5-class model (the eager child builds it and saves it,
r1mega loads that checkpoint) on the same batch of B sequences of P prompt + R response tokens,
split into the same micro-batches, and each runs:

  SFT step: -mean log p(response) over every response token, backward, optimizer step.
  RL step:  GRPO on-policy (ratio 1, as with one update per batch), clip, k3 KL to given
            reference logprobs (kl_coef 0.04), token-mean, backward, optimizer step.

  r1mega  Megatron-Core GPTModel (TE layers if TE exists, local layers otherwise) + the fused
          LM-head kernels of r1mega_kernels (Triton on GPU), Megatron's mixed-precision Adam
          (fp32 master weights and states, gradient clipping 1.0).
  eager   transformers' Qwen2ForCausalLM (SDPA attention) with the weights in the compute dtype,
          logits of the response positions only (``logits_to_keep``, as TRL asks for them) ->
          float32 log_softmax -> gather -> loss -> backward, torch AdamW (fused on CUDA) and
          clip_grad_norm_(1.0): the way TRL's GRPOTrainer computes a step of a model loaded in
          bf16.

Each system runs in a child process of its own (its peak memory is its own). Reported per
phase: median step time, tokens/s, model TFLOP/s, MFU (against the GPU's dense bf16 peak where
known), the step's ratio to its matmul floor (FLOPs at the bf16 matmul rate measured on the
device in the same run), peak memory, and the LM-head share (the head + loss alone, forward and
backward, timed on the step's shapes, over the step time). Before timing, the first SFT loss of
the two systems must agree (same weights, same tokens): numbers from a wrong trainer are worthless.

  # lent GPU (scripts/bench_gpu.sh trainer runs this):
  python tools/bench_trainer.py --device cuda --model qwen2.5-1.5b --out benchmarks/results
  # CPU smoke: tiny shapes, the same code path up to the device (run in the test suite):
  python tools/bench_trainer.py --smoke --out /tmp/bench
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

# Qwen2.5 configurations (their config.json values that matter here); weights are random.
MODELS = {
    "smoke": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=True),
    "cpu-20m": dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
}
# dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name fragment
PEAKS = {"h200": 989.4, "h100": 989.4, "a100": 312.0}
KL_COEF, CLIP = 0.04, 0.2
PHASES = ("sft", "rl")


def model_flops(m: dict, batch: int, prompt: int, response: int) -> dict[str, float]:
    """FLOPs of one step (forward + backward = 3 forwards). A forward costs 2 x (weights that multiply)
    per token for the layers, 2 x hidden x vocab per *response* token for the LM head (both systems
    apply it there only), and attention 4 x layers x hidden x T^2 / 2 per sequence (causal QK^T, AV)."""
    h, L, f, v = m["hidden_size"], m["num_hidden_layers"], m["intermediate_size"], m["vocab_size"]
    kv = h // m["num_attention_heads"] * m["num_key_value_heads"]
    T = prompt + response
    layers = 2 * L * (2 * h * h + 2 * h * kv + 3 * h * f) * T
    attention = 4 * L * h * T * T / 2
    head = 2 * h * v * response
    fwd = batch * (layers + attention + head)
    return {"step": 3 * fwd, "head": 3 * batch * head}


# ----------------------------------------------------------------------------- data


def batch_tokens(spec: dict):
    """(tokens (B, P+R), advantages (B,), reference logprobs (B, R)), seeded: both children see the same."""
    import torch

    g = torch.Generator().manual_seed(spec["seed"])
    B, P, R, V = spec["batch"], spec["prompt"], spec["response"], MODELS[spec["model"]]["vocab_size"]
    tokens = torch.randint(0, V, (B, P + R), generator=g)
    adv = torch.randn(B, generator=g)
    ref = -torch.rand(B, R, generator=g) * 2 - float(torch.log(torch.tensor(float(V))))  # near a random model's
    return tokens, adv, ref


def rows_per_micro_batch(spec: dict) -> int:
    return max(1, spec["micro_batch_tokens"] // (spec["prompt"] + spec["response"]))


# ----------------------------------------------------------------------------- timing helpers


def _sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _timed(fn, device, warmup: int, repeats: int) -> tuple[list[float], list]:
    """Run ``fn`` warmup + repeats times; (seconds of each timed run, every return value)."""
    outs, times = [], []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        outs.append(fn())
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, outs


def _peak_reset(device):
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB -> GiB)


def matmul_tflops(device: str, dtype, n: int) -> float:
    """The device's square-matmul rate at n (best of 3 rounds): the floor every step is held to."""
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device == "cuda" else 3
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12)
    return best


# ----------------------------------------------------------------------------- eager child


def eager_child(spec: dict) -> dict:
    """transformers + torch, the TRL way. Builds the random model and saves it for the r1mega child."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    dev, dtype = spec["device"], getattr(torch, spec["dtype"])
    torch.manual_seed(spec["seed"])
    cfg = Qwen2Config(**MODELS[spec["model"]], rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768,
                      max_window_layers=0, use_sliding_window=False, attn_implementation="sdpa")
    with torch.device(dev):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    model.save_pretrained(spec["model_dir"], safe_serialization=True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.0, fused=dev == "cuda")

    tokens, adv, ref = (x.to(dev) for x in batch_tokens(spec))
    P, R = spec["prompt"], spec["response"]
    rows = rows_per_micro_batch(spec)
    n_tokens = tokens.shape[0] * R

    def head_logp(hidden_or_logits_fn, ids):
        logits = hidden_or_logits_fn()[:, :-1].float()                      # (b, R, V)
        return torch.log_softmax(logits, -1).gather(-1, ids[:, P:, None])[..., 0]  # (b, R)

    def loss_of(logp, a, r, phase):
        if phase == "sft":
            return -logp.sum() / n_tokens
        ratio = torch.exp(logp - logp.detach())                              # on-policy: 1, gradient of logp
        pg = -torch.minimum(ratio * a[:, None], ratio.clamp(1 - CLIP, 1 + CLIP) * a[:, None])
        kl = torch.exp(r - logp) - (r - logp) - 1                            # k3
        return (pg + KL_COEF * kl).sum() / n_tokens

    def step(phase):
        total = 0.0
        for i in range(0, tokens.shape[0], rows):
            ids = tokens[i:i + rows]
            logp = head_logp(lambda: model(ids, logits_to_keep=R + 1).logits, ids)
            loss = loss_of(logp, adv[i:i + rows], ref[i:i + rows], phase)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    out = {"phases": {}}
    for phase in PHASES:
        _peak_reset(dev)
        times, losses = _timed(lambda: step(phase), dev, spec["warmup"], spec["repeats"])
        out["phases"][phase] = {"step_s": times, "first_loss": losses[0], "peak_gb": _peak_gb(dev)}

    # the head alone on the step's shapes: hidden (b, R, H) -> logits -> log_softmax -> loss -> backward
    w = model.lm_head.weight.detach().clone().requires_grad_(True)
    h = torch.randn(rows, R, cfg.hidden_size, device=dev, dtype=dtype, requires_grad=True)

    def head_step():
        for i in range(0, tokens.shape[0], rows):
            ids = tokens[i:i + rows]
            logp = torch.log_softmax((h[:ids.shape[0]] @ w.T).float(), -1).gather(-1, ids[:, P:, None])[..., 0]
            loss_of(logp, adv[i:i + rows], ref[i:i + rows], "rl").backward()

    out["head_s"] = statistics.median(_timed(head_step, dev, spec["warmup"], spec["repeats"])[0])
    return out


# ----------------------------------------------------------------------------- r1mega child


def r1mega_child(spec: dict) -> dict:
    """r1mega's Policy (Megatron-Core + r1mega_kernels) on the eager child's checkpoint."""
    import torch

    from r1mega.config import load_config
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy
    from r1mega.trainer.sft import example
    from r1mega.types import Sample
    from r1mega_kernels import linear_grpo_loss
    from r1mega_kernels._common import resolve_backend

    dev = spec["device"]
    P, R = spec["prompt"], spec["response"]
    cfg = load_config(None, [f"model.dtype={spec['dtype']}", f"model.max_seq_len={P + R}",
                             f"trainer.micro_batch_tokens={rows_per_micro_batch(spec) * (P + R)}",
                             "trainer.old_logprobs=current", "trainer.packing=padded", "optimizer.lr=1e-6",
                             f"trainer.logprob_backend={spec['backend']}",
                             f"algorithm.kl_coef={KL_COEF}", f"algorithm.clip_low={CLIP}", f"algorithm.clip_high={CLIP}",
                             "algorithm.loss_agg=token_mean", "algorithm.entropy_coef=0", "rollout.temperature=1.0"])
    arch = read_hf_config(spec["model_dir"])
    layout = init_parallel(cfg.parallel, arch, seed=spec["seed"], run=cfg.run)
    chunks, arch = load_hf(spec["model_dir"], cfg.model, layout)
    policy = Policy(cfg, layout, arch, chunks)

    tokens, adv, ref = batch_tokens(spec)
    rl = [Sample(prompt_ids=t[:P].tolist(), response_ids=t[P:].tolist(), group_id=i, advantage=float(a),
                 rollout_logprobs=r.tolist()) for i, (t, a, r) in enumerate(zip(tokens, adv, ref))]
    sft = [example(t[:P].tolist(), t[P:].tolist()) for t in tokens]
    n_tokens = float(len(rl) * R)

    def packed(samples, with_ref):
        mbs = policy.pack(samples)
        for mb in mbs:
            if with_ref:  # the given reference logprobs, as the reference pass would have left them
                mb.ref_logp = mb.rollout_logp.clone()
        return mbs

    phases = {"sft": (packed(sft, False), lambda mbs: policy.sft_step(mbs, n_tokens)["loss"]),
              "rl": (packed(rl, True), lambda mbs: policy.train_step(mbs, n_tokens, R)["loss"])}
    out = {"phases": {}, "backend": resolve_backend(cfg.trainer.logprob_backend),
           "micro_batches": len(phases["rl"][0]), "te": policy._te}
    for phase in PHASES:
        mbs, fn = phases[phase]
        _peak_reset(dev)
        times, losses = _timed(lambda: fn(mbs), dev, spec["warmup"], spec["repeats"])
        out["phases"][phase] = {"step_s": times, "first_loss": losses[0], "peak_gb": _peak_gb(dev)}

    # the head alone on the step's shapes: the fused linear GRPO loss, forward and backward
    w = policy._head(policy.chunks[0])[0].detach().clone().requires_grad_(True)
    mbs = phases["rl"][0]
    hs = [torch.randn(int(mb.select.numel()), arch.hidden_size, device=w.device, dtype=w.dtype, requires_grad=True)
          for mb in mbs]

    def head_step():
        for h, mb in zip(hs, mbs):
            loss, _ = linear_grpo_loss(h, w, mb.targets.to(w.device), old_logp=None, advantages=mb.advantages.to(w.device),
                                       mask=mb.mask.to(w.device), ref_logp=mb.ref_logp.to(w.device), clip_low=CLIP,
                                       clip_high=CLIP, kl_coef=KL_COEF, agg="token_mean", seq_ids=mb.seq_ids.to(w.device),
                                       denominator=n_tokens, max_response_len=R, backend=cfg.trainer.logprob_backend)
            loss.backward()

    out["head_s"] = statistics.median(_timed(head_step, dev, spec["warmup"], spec["repeats"])[0])
    return out


# ----------------------------------------------------------------------------- parent


def run_child(system: str, spec: dict, timeout: int) -> dict:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as res:
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", system, "--_spec", json.dumps(spec),
               "--_result", res.name]
        t0 = time.perf_counter()
        env = dict(os.environ)
        if spec["device"] == "cpu" and spec["backend"] == "triton":  # the Triton kernels in the interpreter
            env["TRITON_INTERPRET"] = "1"
        p = subprocess.run(cmd, timeout=timeout, env=env)
        if p.returncode != 0:
            raise SystemExit(f"bench_trainer: the {system} child failed (exit {p.returncode}); its output is above")
        out = json.load(open(res.name))
        out["process_s"] = time.perf_counter() - t0
        return out


def summarize(raw: dict, spec: dict, flops: dict, peak_tflops: float | None, matmul: float) -> dict:
    tok = spec["batch"] * (spec["prompt"] + spec["response"])
    out = {}
    for phase in PHASES:
        t = statistics.median(raw["phases"][phase]["step_s"])
        tflops = flops["step"] / t / 1e12
        out[phase] = {"step_s": t, "tokens_per_s": tok / t, "tflops": tflops,
                      "mfu": tflops / peak_tflops if peak_tflops else None,
                      "floor_ratio": t / (flops["step"] / (matmul * 1e12)),
                      "peak_gb": raw["phases"][phase]["peak_gb"], "first_loss": raw["phases"][phase]["first_loss"],
                      "all_step_s": raw["phases"][phase]["step_s"]}
    out["head_s"] = raw["head_s"]
    out["head_share"] = raw["head_s"] / out["rl"]["step_s"]
    out["process_s"] = raw["process_s"]
    return out


def check_agreement(res: dict, tol: float) -> dict:
    """Each phase's first loss (same weights, same tokens, before that phase's first update) must agree
    between the two systems: SFT's is the mean NLL, RL's holds the k3 KL of the logprobs."""
    out = {"tolerance": tol}
    for phase in PHASES:
        a, b = res["r1mega"][phase]["first_loss"], res["eager"][phase]["first_loss"]
        rel = abs(a - b) / max(abs(b), 1e-12)
        if not rel <= tol:
            raise SystemExit(f"bench_trainer: r1mega's first {phase} loss {a:.6f} and the eager one {b:.6f} differ by "
                             f"{rel:.2%} (> {tol:.2%}): the trainer is wrong on this device, its timings are worthless")
        out[phase] = {"r1mega": a, "eager": b, "rel_diff": rel}
    return out


def table(result: dict) -> str:
    s, r, e = result["spec"], result["r1mega"], result["eager"]
    lines = [f"# Trainer step: r1mega vs transformers + torch eager ({result['device_name']})", "",
             f"{s['model']} (random weights, {result['params'] / 1e6:,.1f}M parameters), {s['dtype']}, TP=1; "
             f"batch {s['batch']} x ({s['prompt']} prompt + {s['response']} response) tokens in "
             f"{r['micro_batches']} micro-batches; median of {s['repeats']} steps after {s['warmup']} warm-up. "
             f"r1mega: LM-head backend `{r['backend']}`, Transformer Engine {'on' if r['te'] else 'off (local layers)'}. "
             f"Matmul rate measured here: {result['matmul_tflops']:.1f} TFLOP/s ({s['dtype']}, n={result['matmul_n']}).", "",
             "| phase | system | step (s) | tokens/s | TFLOP/s | MFU | x matmul floor | peak mem (GiB) | eager / r1mega |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for phase in PHASES:
        for name, x in (("r1mega", r), ("eager", e)):
            mfu = f"{x[phase]['mfu']:.1%}" if x[phase]["mfu"] is not None else "n/a"
            ratio = f"{e[phase]['step_s'] / r[phase]['step_s']:.2f}x" if name == "r1mega" else ""
            lines.append(f"| {phase} | {name} | {x[phase]['step_s']:.4f} | {x[phase]['tokens_per_s']:,.0f} | "
                         f"{x[phase]['tflops']:.2f} | {mfu} | {x[phase]['floor_ratio']:.2f} | "
                         f"{x[phase]['peak_gb']:.2f} | {ratio} |")
    lines += ["", "| system | LM head + loss alone, fwd+bwd (s) | share of the RL step | process wall (s) |",
              "|---|---:|---:|---:|"]
    for name, x in (("r1mega", r), ("eager", e)):
        lines.append(f"| {name} | {x['head_s']:.4f} | {x['head_share']:.1%} | {x['process_s']:.1f} |")
    if s["device"] == "cpu" and r["backend"] == "triton":
        lines += ["", "CPU with the Triton kernels in the interpreter: these timings check the code path, not its speed."]
    a = result["agreement"]
    lines += ["", "First loss of each phase, same weights and tokens: " + "; ".join(
              f"{p} r1mega {a[p]['r1mega']:.5f}, eager {a[p]['eager']:.5f} (relative difference {a[p]['rel_diff']:.1e})"
              for p in PHASES) + f"; tolerance {a['tolerance']:.0e}.",
              f"Peak memory: {'torch.cuda.max_memory_allocated' if s['device'] == 'cuda' else 'process peak RSS'} "
              "over the phase (the model and optimizer state included).", "",
              f"`{result['command']}` · {result['date']} · " + ", ".join(f"{k} {v}" for k, v in result["versions"].items())]
    return "\n".join(lines) + "\n"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "triton", "megatron-core", "transformers", "transformer-engine"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_spec", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model and shapes (the suite runs this)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--model", choices=list(MODELS), help="default: qwen2.5-1.5b (smoke: smoke)")
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], help="default: bfloat16 (smoke: float32)")
    ap.add_argument("--batch", type=int, help="sequences per step (default 16; smoke 6)")
    ap.add_argument("--prompt", type=int, help="prompt tokens per sequence (default 256; smoke 9)")
    ap.add_argument("--response", type=int, help="response tokens per sequence (default 768; smoke 23)")
    ap.add_argument("--micro-batch-tokens", type=int, help="tokens per micro-batch (default 4096; smoke 64)")
    ap.add_argument("--warmup", type=int, help="warm-up steps per phase (default 2; smoke 1)")
    ap.add_argument("--repeats", type=int, help="timed steps per phase, median reported (default 5; smoke 1)")
    ap.add_argument("--backend", choices=["auto", "triton", "torch_chunked"],
                    help="r1mega's LM-head backend (default auto: Triton on GPU; smoke: Triton in the interpreter "
                         "when triton is installed, so the smoke runs the GPU's kernels)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, help="relative SFT-loss agreement (default: 2e-2 bf16, 1e-4 fp32)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per child")
    ap.add_argument("--name", help="output stem (default: <device>_trainer)")
    ap.add_argument("--out", default="benchmarks/results")
    args = ap.parse_args(argv)

    if args._child:
        spec = json.loads(args._spec)
        out = (eager_child if args._child == "eager" else r1mega_child)(spec)
        with open(args._result, "w") as f:
            json.dump(out, f)
        return

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_trainer: --device cuda but torch sees no CUDA GPU")
    sm = args.smoke
    pick = lambda v, big, small: v if v is not None else (small if sm else big)  # noqa: E731
    spec = {"device": device, "model": pick(args.model, "qwen2.5-1.5b", "smoke"),
            "dtype": pick(args.dtype, "bfloat16", "float32"), "batch": pick(args.batch, 16, 6),
            "prompt": pick(args.prompt, 256, 9), "response": pick(args.response, 768, 23),
            "micro_batch_tokens": pick(args.micro_batch_tokens, 4096, 64), "warmup": pick(args.warmup, 2, 1),
            "repeats": pick(args.repeats, 5, 1), "seed": args.seed,
            "backend": args.backend or ("triton" if sm and importlib.util.find_spec("triton") else "auto")}
    if spec["micro_batch_tokens"] < spec["prompt"] + spec["response"]:
        raise SystemExit(f"bench_trainer: --micro-batch-tokens ({spec['micro_batch_tokens']}) must hold one sequence "
                         f"({spec['prompt'] + spec['response']} tokens)")
    tol = args.tolerance or (2e-2 if spec["dtype"] == "bfloat16" else 1e-4)
    m = MODELS[spec["model"]]
    if device == "cuda":
        device_name = torch.cuda.get_device_name()
    else:
        from r1mega.recipes.seeds import machine_info
        info = machine_info()
        device_name = f"{info['cpu']}, {info['cores']} cores, {info['torch_cpu_capability']}"
    peak = next((v for k, v in PEAKS.items() if k in device_name.lower()), None) if device == "cuda" else None
    matmul_n = 8192 if device == "cuda" else 512
    matmul = matmul_tflops(device, getattr(torch, spec["dtype"]), matmul_n)
    flops = model_flops(m, spec["batch"], spec["prompt"], spec["response"])
    print(f"bench_trainer: {spec['model']} {spec['dtype']} on {device_name}: batch {spec['batch']} x "
          f"({spec['prompt']}+{spec['response']}), {flops['step'] / 1e12:.2f} TFLOP per step; matmul {matmul:.1f} TFLOP/s",
          flush=True)
    res = {}
    with tempfile.TemporaryDirectory() as model_dir:
        spec["model_dir"] = model_dir
        for system in ("eager", "r1mega"):  # eager first: it writes the checkpoint both train
            raw = run_child(system, spec, args.timeout)
            res[system] = summarize(raw, spec, flops, peak, matmul)
            if system == "r1mega":
                res[system].update(backend=raw["backend"], micro_batches=raw["micro_batches"], te=raw["te"])
            print(f"  {system}: sft {res[system]['sft']['step_s']:.4f} s, rl {res[system]['rl']['step_s']:.4f} s, "
                  f"head share {res[system]['head_share']:.1%}", flush=True)
    del spec["model_dir"]
    agreement = check_agreement(res, tol)
    from r1mega.models.arch import read_hf_config
    from r1mega.models.params import param_counts

    result = {"spec": spec, "device_name": device_name, "peak_tflops": peak, "matmul_tflops": matmul,
              "matmul_n": matmul_n, "flops_per_step": flops["step"],
              "params": param_counts(read_hf_config({**m, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})).total,
              "agreement": agreement, **res, "versions": versions(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python tools/bench_trainer.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, args.name or f"{'smoke' if sm else device}_trainer")
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    md = table(result)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
