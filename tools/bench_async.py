"""Async disaggregated RL against the synchronous colocated loop, side by side on this machine.

The same random tiny Qwen2, the same prompts, the same batch (prompts x G samples; a random
model rarely samples its end token, so nearly every response runs to the limit: the mean length
is reported) and the same number of processes (2, one thread each), run as ``r1mega train``
under torchrun:

  sync       rollout.mode=sync, 2 ranks: each trains (DP 2) and hosts a colocated engine;
             generation, then training, then the weight sync, one after the other.
  async k=0  1 rollout rank + 1 trainer rank, max_staleness 0: the rollout rank waits for the
             weights of step n-1 before generating batch n (no overlap: the cost of separation).
  async k=1  the same ranks, max_staleness 1: batch n+1 is generated while step n trains.

Reported per configuration: the steady-state time per step (the wall time between the metrics of
the last ``--warmup`` step and of the last step, over the steps between, from metrics.jsonl's
``ts``), samples/s, and the time per step against sync's. The configurations are interleaved over
``--repeats`` rounds, so drift of the machine hits all of them; the median over rounds is quoted.

  python tools/bench_async.py --out benchmarks/results            # ~10 min on 2 cores
  python tools/bench_async.py --smoke --out /tmp/bench_async       # the test suite's run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "sync": dict(nproc=2, overrides=["rollout.mode=sync"]),
    "async_k0": dict(nproc=2, overrides=["rollout.mode=async", "parallel.rollout_ranks=1", "rollout.max_staleness=0"]),
    "async_k1": dict(nproc=2, overrides=["rollout.mode=async", "parallel.rollout_ranks=1", "rollout.max_staleness=1"]),
}


def build_assets(root: str, hidden: int, layers: int, n_prompts: int) -> tuple[str, str]:
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    heads = max(1, hidden // 64)  # head dim 64: vLLM's CPU attention takes 32, 64, 80, ...; not 16
    model = build_tiny_qwen2(os.path.join(root, "model"), hidden=hidden, heads=heads, kv_heads=max(1, heads // 2),
                             layers=layers, intermediate=hidden * 3, seed=0)
    train, _ = make_splits("arithmetic", n_prompts, 4, seed=0, ops=["+"], min_digits=1, max_digits=3)
    return model, write_jsonl(train, os.path.join(root, "train.jsonl"))


def run_one(name: str, out: str, model: str, data: str, args) -> dict:
    """One ``r1mega train`` run of configuration ``name``; its steady-state step time."""
    from r1mega.logging.metrics import read_metrics

    spec = CONFIGS[name]
    overrides = [f"model.hf_path={model}", f"data.train={data}", f"run.output_dir={out}", "run.name=run",
                 "data.template=plain", "data.max_prompt_len=64", f"model.max_seq_len={64 + args.response}",
                 f"rollout.max_new_tokens={args.response}", f"algorithm.group_size={args.group}",
                 f"data.prompts_per_step={args.prompts}", "optimizer.lr=1e-4", f"run.steps={args.steps}",
                 "run.save_every=0", "run.export_hf=false", "run.tensorboard=false", "eval.before_train=false",
                 "reward.num_workers=0", "rollout.parity_tokens=0", "trainer.micro_batch_tokens=4096",
                 "reward.weights={accuracy: 1.0}", *spec["overrides"]]
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={spec['nproc']}",
           "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", "r1mega.cli", "train", *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    rows = [m for m in read_metrics(os.path.join(out, "run")) if "actor/loss" in m]
    if len(rows) != args.steps:
        raise RuntimeError(f"{name}: {len(rows)} steps logged, expected {args.steps}")
    return {**steady_state(rows, args.warmup, args.prompts * args.group), "wall_s": time.perf_counter() - t0}


def steady_state(rows: list[dict], warmup: int, samples_per_step: int) -> dict:
    """Seconds per step after ``warmup`` steps: (ts of the last step - ts of step ``warmup``) /
    (steps - warmup), from the metrics rows (each logged when its step ends); with samples/s and
    the mean response length and staleness over those steps."""
    if not 1 <= warmup < len(rows):
        raise ValueError(f"warmup ({warmup}) must be in [1, {len(rows)}) steps")
    step_s = (rows[-1]["ts"] - rows[warmup - 1]["ts"]) / (len(rows) - warmup)
    after = rows[warmup:]
    return {"step_s": step_s, "samples_per_s": samples_per_step / step_s,
            "response_len_mean": statistics.mean(m["response/len_mean"] for m in after),
            "staleness_mean": statistics.mean(m.get("offpolicy/staleness_mean", 0.0) for m in after)}


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [f"# Async disaggregated vs synchronous colocated RL ({result['machine'].get('cpu', '?')})", "",
             f"`{result['command']}`", "",
             f"Random tiny Qwen2 (hidden {a['hidden']}, {a['layers']} layers), {a['prompts']} prompts x G {a['group']} "
             f"x {a['response']} response tokens per step, {a['steps']} steps (the first {a['warmup']} are warm-up), "
             f"2 processes of 1 thread each, {a['repeats']} interleaved rounds; median over rounds.", "",
             "| configuration | s / step | samples / s | step time vs sync | staleness (mean) | per round (s / step) |",
             "|---|---:|---:|---:|---:|---|"]
    base = result["summary"]["sync"]["step_s"]
    for name, s in result["summary"].items():
        rounds = ", ".join(f"{r['step_s']:.3f}" for r in result["rounds"][name])
        lines.append(f"| {name} | {s['step_s']:.3f} | {s['samples_per_s']:.1f} | {s['step_s'] / base:.2f}x | "
                     f"{s['staleness_mean']:.2f} | {rounds} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--response", type=int, default=64)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=1200)
    p.add_argument("--smoke", action="store_true", help="tiny shapes, 1 round: the test suite's run")
    args = p.parse_args(argv)
    if args.smoke:
        args.hidden, args.layers, args.prompts, args.group, args.response = 128, 1, 2, 2, 8
        args.steps, args.warmup, args.repeats = 4, 2, 1
    if not 1 <= args.warmup < args.steps:
        p.error(f"--warmup ({args.warmup}) must be in [1, --steps ({args.steps}))")
    from r1mega.recipes.seeds import machine_info

    os.makedirs(args.out, exist_ok=True)
    rounds: dict[str, list] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="r1mega-bench-async-") as root:
        model, data = build_assets(root, args.hidden, args.layers, max(64, args.prompts * args.steps))
        for r in range(args.repeats):
            for name in CONFIGS:
                res = run_one(name, os.path.join(root, f"{name}_{r}"), model, data, args)
                rounds[name].append(res)
                print(f"round {r + 1}/{args.repeats} {name}: {res['step_s']:.3f} s/step "
                      f"({res['samples_per_s']:.1f} samples/s)", flush=True)
    summary = {name: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for name, rs in rounds.items()}
    result = {"args": vars(args), "machine": machine_info(), "rounds": rounds, "summary": summary,
              "command": "python tools/bench_async.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    stem = "async_smoke" if args.smoke else "async_throughput"
    with open(os.path.join(args.out, f"{stem}.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.out, f"{stem}.md"), "w") as f:
        f.write(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
