"""Partial rollout against sync rollout, on a task whose response lengths have a long tail.

The tiny ``longtail`` preset (r1mega.recipes.tiny: one-digit additions and subtractions; a base
pretrained on text in which 15% of the formatted answers re-check their worked steps 3-8 times; it
stays near chance at its sums), or with ``--preset longtail_skilled`` the same tail on the
default's two-digit additions and a base that can add (about 11 minutes more to build), is built
once: data, tokenizer, base model, and the base's response lengths, accuracy and format at
the RL sampling settings (the RL run's engine, one group per prompt). Then, per seed and on that
same base, two RL runs, each ``r1mega train`` in a child process of its own, interleaved (sync s0,
partial s0, sync s1, ...) so that a drift of the machine hits both modes alike:

    sync     rollout.mode=sync: a step generates its prompts' whole responses, waiting for the longest
    partial  rollout.mode=partial rollout.partial_chunk=C algorithm.rollout_is=truncate
             [rollout.partial_min_groups=M]: rounds of at most C new tokens per response until M x
             prompts_per_step groups are complete (and none started rollout.partial_max_lag steps
             ago is unfinished); the unfinished ones continue next step

With M = 1 a step waits for every group it started, so nothing carries over and partial is sync in
chunks (the table says so when no group was ever in flight); M < 1 (the config's default is 0.75)
lets the long tail spill into later steps.

Per run, from its metrics.jsonl: the mean step time (``time/step``) and rollout time
(``time/rollout``) over the steps after the first ``--warmup`` (the first step also warms the
engine and the trainer up), the time per trained group (a partial step trains the complete groups,
possibly fewer than prompts_per_step), held-out pass@1 and reward (``eval/reward``: the training
reward on the held-out prompts) before RL (step 0) and after the last step, the training reward,
response lengths and the ``partial/*`` metrics. Per seed: the ratios sync / partial (above 1:
partial is faster); over seeds: mean, min and max, and for the held-out numbers the paired
difference partial - sync with its 95% interval (within noise when it holds 0). Written to
OUT/partial_rollout.json and .md (partial_rollout_<preset>.* for another preset) with the machine
and the command.

  python tools/bench_partial.py --min-groups 0.75 --out benchmarks/results   # seeds 0-5, ~8 min
  python tools/bench_partial.py --preset longtail_skilled --min-groups 0.75 --out benchmarks/results  # ~22 min
  python tools/bench_partial.py --smoke --out /tmp/bench                      # the test's run, ~1 min

The runs' directories (configs, logs, metrics) are under ``--work`` (default runs/bench_partial);
a base built there with the same settings is reused (``--rebuild`` builds it again). Extra
``key=value`` arguments override both modes' RL config (e.g. ``run.steps=30``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, replace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # run from a checkout without installing

from r1mega.recipes.tiny import TinySettings, default_config_path  # noqa: E402

MODES = ("sync", "partial")


def settings(smoke: bool, preset: str = "longtail") -> TinySettings:
    """The tiny ``preset``, or (``smoke``) a version small enough for the test suite: a base
    pretrained for a handful of steps, 3 RL steps of 2 prompts x 4 samples of up to 48 tokens."""
    s = TinySettings.preset(preset)
    if not smoke:
        return s
    return replace(s, n_train=32, n_eval=4, n_val=0, pretrain_docs=256, pretrain_steps=4, pretrain_batch=16,
                   rl_overrides=["run.steps=3", "data.prompts_per_step=2", "algorithm.group_size=4",
                                 "rollout.max_new_tokens=48", "model.max_seq_len=160", "data.max_prompt_len=64",
                                 "eval.k=1", "eval.max_prompts=4", "eval.greedy=false", "run.save_every=0",
                                 "reward.weights={accuracy: 1.0, format: 1.0}"])


def mode_overrides(mode: str, chunk: int, min_groups: float | None = None) -> list[str]:
    """The overrides that make a run ``mode``; ``min_groups`` None keeps rollout.partial_min_groups' default."""
    if mode == "sync":
        return ["rollout.mode=sync"]
    return ["rollout.mode=partial", f"rollout.partial_chunk={chunk}", "algorithm.rollout_is=truncate",
            *([f"rollout.partial_min_groups={min_groups}"] if min_groups is not None else [])]


# ------------------------------------------------------------------------------------------ build

def build(work: str, s: TinySettings, seed: int, rebuild: bool = False) -> dict:
    """Data, tokenizer and base model of ``s`` under ``work`` (reused when ``work/build.json``
    records the same settings and seed). Returns the paths the RL runs need."""
    from r1mega.config import load_config

    cfg = load_config(default_config_path(), [f"run.output_dir={work}", *s.rl_overrides, f"run.seed={seed}"])
    record_path = os.path.join(work, "build.json")
    # what the base depends on: not the RL overrides, but the context length its config records
    want = {"settings": {k: v for k, v in asdict(s).items() if k != "rl_overrides"}, "seed": seed,
            "max_seq_len": cfg.model.max_seq_len}
    want = json.loads(json.dumps(want))  # tuples as lists, as read back
    if not rebuild and os.path.isfile(record_path):
        with open(record_path) as f:
            record = json.load(f)
        if {k: record.get(k) for k in want} == want and os.path.isdir(record["base_dir"]):
            print(f"[bench_partial] reusing the base in {work} (--rebuild to build it again)", flush=True)
            return record
    from r1mega.parallel.init import init_distributed
    from r1mega.recipes.tiny import build_base, prepare_data

    t0 = time.perf_counter()
    init_distributed(cfg.run)
    data = prepare_data(work, s, seed)
    base_dir, tok_dir = build_base(work, s, data.docs, cfg, data.val_rows)
    record = {**want, "base_dir": base_dir, "tokenizer_dir": tok_dir, "train": data.train_path,
              "eval": data.eval_path, "build_s": time.perf_counter() - t0}
    with open(record_path, "w") as f:
        json.dump(record, f, indent=2)
    return record


def run_overrides(b: dict, s: TinySettings, work: str, name: str, seed: int, extra=()) -> list[str]:
    """The ``r1mega train`` overrides of one run on the base ``b`` (as run_tiny composes them)."""
    return [f"run.output_dir={os.path.join(work, 'runs')}", f"run.name={name}", f"model.hf_path={b['base_dir']}",
            f"model.tokenizer_path={b['tokenizer_dir']}", f"data.train={b['train']}", f"data.eval={b['eval']}",
            f"data.template={s.template}", "eval.before_train=true", "run.export_hf=false", "run.tensorboard=false",
            *s.rl_overrides, f"run.seed={seed}", f"rollout.seed={seed}", *extra]


def write_config(path: str, overrides: list[str]) -> str:
    """The resolved config of a run as YAML (validated here: a bad override fails before any child)."""
    from r1mega.config import load_config, save_config

    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_config(load_config(default_config_path(), overrides), path)
    return path


def child(cmd: list[str], log_path: str) -> float:
    """Run ``cmd`` with its output in ``log_path``; its wall seconds. A failure names the log and its tail."""
    print(f"[bench_partial] {shlex.join(cmd)}  (log: {log_path})", flush=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(f"{shlex.join(cmd)} failed (exit {rc}); the end of {log_path}:\n{tail}")
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------------- measurement

def quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: the smallest value with at least a share ``q`` of ``values`` at or below it."""
    v = sorted(values)
    return float(v[max(0, math.ceil(q * len(v)) - 1)])


def length_stats(lengths: list[int], limit: int, bins: int = 8) -> dict:
    """mean / p50 / p90 / p99 / max of response lengths in tokens, the share at ``limit``, and
    the share in each of ``bins`` equal bins of (0, limit] (upper bounds as keys)."""
    if not lengths:
        raise ValueError("no response lengths to summarize")
    edges = [math.ceil(limit * (i + 1) / bins) for i in range(bins)]
    hist = {e: 0 for e in edges}
    for n in lengths:
        hist[next(e for e in edges if n <= e) if n <= limit else edges[-1]] += 1
    return {"samples": len(lengths), "mean": statistics.fmean(lengths), "p50": quantile(lengths, 0.5),
            "p90": quantile(lengths, 0.9), "p99": quantile(lengths, 0.99), "max": max(lengths),
            "at_limit": sum(n >= limit for n in lengths) / len(lengths), "limit": limit,
            "histogram": {f"<={e}": c / len(lengths) for e, c in hist.items()}}


def base_lengths(config: str, n_prompts: int) -> dict:
    """The base's response lengths on the first ``n_prompts`` training prompts, one group of
    ``algorithm.group_size`` each, sampled by the RL run's engine settings (``config``: the base
    model, temperature, max_new_tokens, stop, seed): what the first RL step of either mode sees.
    In this process (a child would pay the imports and the engine's start again)."""
    from r1mega.config import load_config
    from r1mega.data.prompts import prompts_from_config
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.rewards import accuracy_reward, format_reward
    from r1mega.rollout.groups import make_engine

    t0 = time.perf_counter()
    cfg = load_config(config)
    records = prompts_from_config(cfg.data, load_tokenizer(cfg.model.tokenizer_path))[:n_prompts]
    engine = make_engine(cfg, cfg.model.hf_path)
    try:
        samples = engine.generate([r.prompt_ids for r in records], n=cfg.algorithm.group_size)
    finally:
        engine.shutdown()
    answers = [r for r in records for _ in range(cfg.algorithm.group_size)]  # generate returns groups in order
    acc = [accuracy_reward(x.response_text, r.answer, r.metadata, cfg.reward).score for x, r in zip(samples, answers)]
    fmt = [format_reward(x.response_text, r.answer, r.metadata, cfg.reward).score for x, r in zip(samples, answers)]
    return {**length_stats([len(x.response_ids) for x in samples], cfg.rollout.max_new_tokens),
            "accuracy": statistics.fmean(acc), "format": statistics.fmean(fmt),
            "temperature": cfg.rollout.temperature, "prompts": len(records), "wall_s": time.perf_counter() - t0}


def summarize_run(run_dir: str, warmup: int, prompts_per_step: int) -> dict:
    """One run's numbers from its metrics.jsonl: step and rollout seconds (means over the steps
    after the first ``warmup``) and seconds per trained group (a partial step may train fewer than
    ``prompts_per_step`` groups: ``partial/trained_groups``), held-out eval before (step 0) and after
    (the last step), the training reward at the first step and over the last three, response
    lengths, tokens per second and the partial-rollout metrics (means over every step)."""
    from r1mega.logging.metrics import METRICS_FILE, read_metrics

    records = read_metrics(os.path.join(run_dir, METRICS_FILE))
    steps = [r for r in records if "time/step" in r]
    if len(steps) <= warmup:
        raise ValueError(f"warmup ({warmup}) leaves none of the {len(steps)} steps of {run_dir} to time")
    timed = steps[warmup:]
    evals = [r for r in records if "eval/pass@1" in r]
    before = next((r for r in evals if r["step"] == 0), {})
    after = evals[-1] if evals and evals[-1]["step"] == steps[-1]["step"] else {}

    def mean_of(key: str, rows=timed) -> float | None:
        vals = [r[key] for r in rows if key in r]
        return statistics.fmean(vals) if vals else None

    groups = [r.get("partial/trained_groups", prompts_per_step) for r in timed]
    partial = sorted({k for r in steps for k in r if k.startswith("partial/")})
    return {"steps": len(steps), "timed_steps": [r["step"] for r in timed],
            "step_s": mean_of("time/step"), "rollout_s": mean_of("time/rollout"), "train_s": mean_of("time/train"),
            "groups_per_step": statistics.fmean(groups),
            "group_s": sum(r["time/step"] for r in timed) / max(sum(groups), 1e-9),
            "warmup_step_s": [r["time/step"] for r in steps[:warmup]],
            "all_steps_s": sum(r["time/step"] for r in steps), "tokens_per_s": mean_of("perf/tokens_per_s"),
            "pass@1_before": before.get("eval/pass@1"), "pass@1_after": after.get("eval/pass@1"),
            "reward_before": before.get("eval/reward"), "reward_after": after.get("eval/reward"),
            "reward_first": steps[0].get("reward/mean"), "reward_last3": mean_of("reward/mean", steps[-3:]),
            "response_len_mean": mean_of("response/len_mean", steps),
            "response_len_max": max((r["response/len_max"] for r in steps if "response/len_max" in r), default=None),
            "response_clip_frac": mean_of("response/clip_frac", steps),
            "partial": {k: mean_of(k, steps) for k in partial}}


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086}
"""Student's t, two-sided 95% (the 0.975 quantile), by degrees of freedom."""


def paired_difference(a: list[float], b: list[float]) -> dict:
    """The mean of b - a over paired runs (one pair per seed: same base, same seed) with its 95%
    confidence interval (Student's t over the pairs; above 20 pairs, 1.96). ``within_noise``: the
    interval holds 0, i.e. the pairs do not tell the two apart at 95%. Needs at least 2 pairs."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"a paired difference needs >= 2 pairs of the same length (got {len(a)} and {len(b)})")
    d = [y - x for x, y in zip(a, b)]
    mean, se = statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d))
    half = T975.get(len(d) - 1, 1.96) * se
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "pairs": len(d), "within_noise": mean - half <= 0 <= mean + half}


def compare(per_seed: dict) -> dict:
    """Per seed the ratios sync / partial of step, rollout and per-trained-group time, and the
    held-out pass@1 and reward after RL of both; over seeds their mean, min and max, and the paired
    differences partial - sync of the held-out numbers (:func:`paired_difference`)."""
    rows = {}
    for seed, runs in per_seed.items():
        sy, pa = runs["sync"], runs["partial"]
        rows[seed] = {"step_s_sync": sy["step_s"], "step_s_partial": pa["step_s"],
                      "step_ratio": sy["step_s"] / pa["step_s"], "rollout_ratio": sy["rollout_s"] / pa["rollout_s"],
                      "group_ratio": sy["group_s"] / pa["group_s"],
                      "all_steps_ratio": sy["all_steps_s"] / pa["all_steps_s"],
                      "pass@1_before": sy["pass@1_before"],
                      "pass@1_after_sync": sy["pass@1_after"], "pass@1_after_partial": pa["pass@1_after"],
                      "reward_last3_sync": sy["reward_last3"], "reward_last3_partial": pa["reward_last3"],
                      "reward_before": sy["reward_before"],
                      "reward_after_sync": sy["reward_after"], "reward_after_partial": pa["reward_after"]}
    keys = [k for k in next(iter(rows.values())) if all(r[k] is not None for r in rows.values())]
    diffs = {}
    for metric in ("pass@1", "reward"):
        sy, pa = f"{metric}_after_sync", f"{metric}_after_partial"
        if len(rows) >= 2 and sy in keys and pa in keys:
            diffs[metric] = paired_difference([r[sy] for r in rows.values()], [r[pa] for r in rows.values()])
    return {"per_seed": rows, "over_seeds": {k: spread([r[k] for r in rows.values()]) for k in keys},
            "held_out_difference": diffs}


# ---------------------------------------------------------------------------------------- report

def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def markdown(result: dict) -> str:
    c, base, o = result["comparison"], result["base_lengths"], result["comparison"]["over_seeds"]
    steps, w = result["rl_steps"], result["warmup"]
    per_prompt = base["samples"] // max(base["prompts"], 1)
    lines = [f"Partial rollout (chunk {result['chunk']}, partial_min_groups {result['min_groups']}, partial_max_lag "
             f"{result.get('max_lag')}) against sync rollout on the `{result.get('preset', 'longtail')}` tiny preset: "
             f"{steps} RL steps of {result['prompts_per_step']} prompts x "
             f"{result['group_size']} samples, max_new_tokens {result['max_new_tokens']}, seeds "
             f"{', '.join(map(str, result['seeds']))}, each seed's two runs on one base and one after the other. "
             f"Times are means over steps {w + 1}-{steps} (the first {w} left out: warm-up); ratios are "
             f"sync / partial (above 1: partial is faster). A partial step may train fewer groups than "
             f"prompts_per_step (it trains the complete ones), so the time per trained group is the fair rate.", "",
             f"Base response lengths ({base['prompts']} training prompts x {per_prompt} samples at temperature "
             f"{base['temperature']}): mean {base['mean']:.1f}, p50 {base['p50']:.0f}, p90 {base['p90']:.0f}, "
             f"p99 {base['p99']:.0f}, max {base['max']}, at the limit {_pct(base['at_limit'])}; by length: "
             + ", ".join(f"{k} {_pct(v)}" for k, v in base["histogram"].items())
             + f". The base's accuracy {_pct(base['accuracy'])}, format {_pct(base['format'])}.", "",
             "| seed | step s sync | step s partial | step ratio | rollout ratio | per-group ratio |",
             "|---:|---:|---:|---:|---:|---:|"]
    for seed, r in c["per_seed"].items():
        lines.append(f"| {seed} | {r['step_s_sync']:.2f} | {r['step_s_partial']:.2f} | {r['step_ratio']:.2f} | "
                     f"{r['rollout_ratio']:.2f} | {r['group_ratio']:.2f} |")

    def cell(k, fmt):
        return f"{fmt(o[k]['mean'])} [{fmt(o[k]['min'])}, {fmt(o[k]['max'])}]" if k in o else "n/a"

    f2, pct = (lambda x: f"{x:.2f}"), _pct
    lines.append(f"| mean [min, max] | {cell('step_s_sync', f2)} | {cell('step_s_partial', f2)} | "
                 f"{cell('step_ratio', f2)} | {cell('rollout_ratio', f2)} | {cell('group_ratio', f2)} |")
    lines += ["", "Held-out after RL (`eval/reward`: the training reward, accuracy + format, on the held-out "
              "prompts; `eval/pass@1`: accuracy), per seed and the paired difference partial - sync with its 95% "
              "confidence interval over seeds (Student's t):", "",
              "| seed | reward base | reward sync | reward partial | pass@1 base | pass@1 sync | pass@1 partial |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    num = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
    for seed, r in c["per_seed"].items():
        lines.append(f"| {seed} | {num(r.get('reward_before'))} | {num(r.get('reward_after_sync'))} | "
                     f"{num(r.get('reward_after_partial'))} | {_pct(r['pass@1_before'])} | "
                     f"{_pct(r['pass@1_after_sync'])} | {_pct(r['pass@1_after_partial'])} |")
    lines.append(f"| mean [min, max] | {cell('reward_before', num)} | {cell('reward_after_sync', num)} | "
                 f"{cell('reward_after_partial', num)} | {cell('pass@1_before', pct)} | "
                 f"{cell('pass@1_after_sync', pct)} | {cell('pass@1_after_partial', pct)} |")
    for metric, d in c.get("held_out_difference", {}).items():
        fmt = pct if metric == "pass@1" else (lambda x: f"{x:+.3f}")
        verdict = "within noise (the interval holds 0)" if d["within_noise"] else "**not within noise**"
        lines.append(f"\nHeld-out {metric}, partial - sync: {fmt(d['mean'])} [{fmt(d['lo'])}, {fmt(d['hi'])}] "
                     f"over {d['pairs']} seeds: {verdict}.")
    lines += ["", "| seed | mode | step s | rollout s | groups/step | s per group | warm-up step s | reward first "
              "-> last 3 | response len mean | len max | tokens/s | run wall s | partial metrics (means per step) |",
              "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for seed, runs in result["runs"].items():
        for mode in MODES:
            r = runs[mode]
            part = ", ".join(f"{k.split('/', 1)[1]} {v:.1f}" for k, v in r["partial"].items() if v is not None)
            warm = ", ".join(f"{x:.1f}" for x in r["warmup_step_s"])
            lines.append(f"| {seed} | {mode} | {r['step_s']:.2f} | {r['rollout_s']:.2f} | {r['groups_per_step']:.1f} | "
                         f"{r['group_s']:.3f} | {warm} | {r['reward_first']:.2f} -> {r['reward_last3']:.2f} | "
                         f"{r['response_len_mean']:.1f} | {r['response_len_max']:.0f} | {r['tokens_per_s']:.0f} | "
                         f"{r['wall_s']:.0f} | {part or '-'} |")
    carried = [r["partial"].get("partial/in_flight_groups") for runs in result["runs"].values()
               for r in [runs["partial"]]]
    if carried and all(x == 0 for x in carried):
        lines += ["", "No group was ever carried over (partial/in_flight_groups 0 at every step): each partial "
                      "step waited for all the groups it started, so partial ran as sync in chunks. Lower "
                      "--min-groups (rollout.partial_min_groups) to let the long tail spill into later steps."]
    m = result["machine"]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in m.items()), "",
              f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results"),
                   help="where partial_rollout.json and .md go (partial_rollout_<preset>.* for another preset)")
    p.add_argument("--work", default=None, help="runs, configs and logs (default runs/bench_partial, "
                                                "runs/bench_partial_<preset> for another preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5],
                   help="RL seeds (run.seed and rollout.seed); the held-out comparison is paired over them")
    p.add_argument("--base-seed", type=int, default=0, help="seed of the data and the base model (built once)")
    p.add_argument("--chunk", type=int, default=32, help="rollout.partial_chunk of the partial runs")
    p.add_argument("--min-groups", type=float, default=None,
                   help="rollout.partial_min_groups of the partial runs (default: the config's). At 1.0 a step waits "
                        "for all its groups and nothing carries over: partial is sync in chunks")
    p.add_argument("--warmup", type=int, default=1, help="first steps of each run left out of the step times")
    p.add_argument("--length-prompts", type=int, default=64, help="training prompts of the base's length measurement")
    p.add_argument("--preset", default="longtail", choices=("longtail", "longtail_skilled"),
                   help="the tiny preset: longtail (a base near chance at its sums: fast) or longtail_skilled "
                        "(a base that can add: held-out accuracy means something; ~10 min more to build)")
    p.add_argument("--smoke", action="store_true", help="tiny settings: the whole pipeline in about a minute")
    p.add_argument("--rebuild", action="store_true", help="build the base again even if --work has it")
    p.add_argument("--base-only", action="store_true", help="build the base, measure its lengths and stop")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of both modes' runs (e.g. run.steps=20)")
    args = p.parse_args(argv)
    command = shlex.join(["python", "tools/bench_partial.py", *(sys.argv[1:] if argv is None else argv)])

    s = settings(args.smoke, args.preset)
    suffix = "" if args.preset == "longtail" else f"_{args.preset}"
    args.work = args.work or os.path.join(REPO, "runs", f"bench_partial{suffix}")
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    b = build(work, s, args.base_seed, rebuild=args.rebuild)
    base_cfg = write_config(os.path.join(work, "configs", "base.yaml"),
                            run_overrides(b, s, work, "base", args.base_seed, [*mode_overrides("sync", args.chunk),
                                                                               *args.overrides]))
    lengths = base_lengths(base_cfg, args.length_prompts)
    print(f"[bench_partial] base response lengths: {json.dumps(lengths)}", flush=True)
    if args.base_only:
        return {"base_lengths": lengths, "build": b}
    from r1mega.config import load_config

    rl_cfg = load_config(base_cfg)
    pps = rl_cfg.data.prompts_per_step

    runs: dict[str, dict] = {}
    for seed in args.seeds:  # interleaved: sync s0, partial s0, sync s1, ...
        for mode in MODES:
            name = f"{mode}_s{seed}"
            extra = [*mode_overrides(mode, args.chunk, args.min_groups), *args.overrides]
            cfg_path = write_config(os.path.join(work, "configs", f"{name}.yaml"),
                                    run_overrides(b, s, work, name, seed, extra))
            run_dir = os.path.join(work, "runs", name)
            if os.path.isdir(run_dir):  # a fresh run, not a resume of an older one
                import shutil
                shutil.rmtree(run_dir)
            wall = child([sys.executable, "-m", "r1mega.cli", "train", cfg_path], os.path.join(work, f"{name}.log"))
            runs.setdefault(str(seed), {})[mode] = {**summarize_run(run_dir, args.warmup, pps), "wall_s": wall,
                                                    "config": cfg_path}
            r = runs[str(seed)][mode]
            print(f"[bench_partial] {name}: step {r['step_s']:.2f} s, rollout {r['rollout_s']:.2f} s, pass@1 "
                  f"{r['pass@1_before']} -> {r['pass@1_after']}", flush=True)

    from r1mega.recipes.seeds import machine_info

    partial_cfg = load_config(runs[str(args.seeds[0])]["partial"]["config"])
    result = {"command": command, "preset": args.preset, "chunk": args.chunk,
              "min_groups": partial_cfg.rollout.partial_min_groups, "max_lag": partial_cfg.rollout.partial_max_lag,
              "seeds": args.seeds, "base_seed": args.base_seed,
              "warmup": args.warmup, "rl_steps": rl_cfg.run.steps, "prompts_per_step": pps,
              "group_size": rl_cfg.algorithm.group_size, "max_new_tokens": rl_cfg.rollout.max_new_tokens,
              "smoke": args.smoke, "overrides": args.overrides, "settings": asdict(s),
              "build_s": b.get("build_s"), "base_lengths": lengths, "runs": runs,
              "comparison": compare({k: v for k, v in runs.items()}), "machine": machine_info()}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"partial_rollout{suffix}.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    text = markdown(result)
    with open(os.path.join(args.out, f"partial_rollout{suffix}.md"), "w") as f:
        f.write(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
