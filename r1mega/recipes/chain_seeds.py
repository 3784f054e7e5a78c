"""The R1 chain over several seeds (``r1mega r1-chain --seeds N``): does every stage earn its place on every seed?

Each seed is a full ``r1mega r1-chain --seed S`` in its own process under ``OUT/seed_S`` (a seed
whose ``chain.json`` exists is not run again). Then:

    OUT/chain_seeds.json  every stage's held-out metrics per seed, and each stage's gain per seed
                          with mean / min / max
    OUT/chain_seeds.md    the same as tables, with the machine that produced them
    OUT/chain.png         one line per metric across the stages, the band spanning the seeds
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from r1mega.recipes.r1_chain import GAINS, plot_chain
from r1mega.recipes.seeds import machine_info, spread

METRICS = ("pass@1", "maj@k", "greedy", "general_rule_rate", "response_len")


def aggregate(summaries: list[dict]) -> dict:
    """Per stage and metric the spread over seeds; per stage gain the values and their spread."""
    stages = [r["stage"] for r in summaries[0]["rows"]]
    table = {}
    for st in stages:
        rows = [next(r for r in s["rows"] if r["stage"] == st) for s in summaries]
        table[st] = {m: spread([r[m] for r in rows]) for m in METRICS if all(r.get(m) is not None for r in rows)}
    gains = {}
    for name in GAINS:
        if all(name in s["gains"] for s in summaries):
            vals = [s["gains"][name] for s in summaries]
            gains[name] = {"per_seed": vals, **spread(vals)}
    return {"seeds": [s["seed"] for s in summaries], "stages": table, "gains": gains}


def markdown(agg: dict, machine: dict, wall: list[float]) -> str:
    pct = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    pts = lambda v: f"{100 * v:+.1f}"  # noqa: E731
    lines = [f"R1 chain over {len(agg['seeds'])} seeds ({', '.join(map(str, agg['seeds']))}): held-out metrics, "
             "mean [min, max]", "", "| stage | pass@1 | maj@k | greedy | general rule |", "|---|---:|---:|---:|---:|"]
    for st, m in agg["stages"].items():
        cells = [f"{pct(m[k]['mean'])} [{pct(m[k]['min'])}, {pct(m[k]['max'])}]" if k in m else "-"
                 for k in ("pass@1", "maj@k", "greedy", "general_rule_rate")]
        lines.append(f"| {st} | " + " | ".join(cells) + " |")
    lines += ["", "Each stage's gain in the metric it is there for (points; after minus before):", "",
              "| gain | " + " | ".join(f"seed {s}" for s in agg["seeds"]) + " | mean | min |",
              "|---|" + "---:|" * (len(agg["seeds"]) + 2)]
    for name, g in agg["gains"].items():
        metric, before, after = GAINS[name]
        lines.append(f"| {metric}: stage {before} -> {after} | " + " | ".join(pts(v) for v in g["per_seed"])
                     + f" | {pts(g['mean'])} | {pts(g['min'])} |")
    lines += ["", f"Wall time per seed: {', '.join(f'{w / 60:.1f} min' for w in wall)}",
              "", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items())]
    return "\n".join(lines) + "\n"


def run_chain_seeds(out: str, seeds: list[int], *, quick: bool = False, overrides=()) -> dict:
    """Run the chain once per seed (each in its own process), then aggregate."""
    summaries = []
    for seed in seeds:
        seed_out = os.path.join(out, f"seed_{seed}")
        path = os.path.join(seed_out, "chain.json")
        if not os.path.isfile(path):
            cmd = [sys.executable, "-m", "r1mega.cli", "r1-chain", "--out", seed_out, "--seed", str(seed)]
            cmd += ["--quick"] * quick + list(overrides)
            print(f"[r1mega chain seeds] seed {seed}: {' '.join(cmd)}", flush=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True)
            print(f"[r1mega chain seeds] seed {seed} done in {time.perf_counter() - t0:.0f} s", flush=True)
        with open(path) as f:
            summaries.append(json.load(f))
    agg = aggregate(summaries)
    machine = machine_info()
    result = {**agg, "machine": machine, "wall_time_s": [s["wall_time_s"] for s in summaries],
              "per_seed": [{"seed": s["seed"], "rows": s["rows"], "gains": s["gains"]} for s in summaries]}
    with open(os.path.join(out, "chain_seeds.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, "chain_seeds.md"), "w") as f:
        f.write(markdown(agg, machine, result["wall_time_s"]))
    plot_chain([s["rows"] for s in summaries], os.path.join(out, "chain.png"),
               f"R1 chain over {len(summaries)} seeds (line: mean, band: min..max)")
    return result
