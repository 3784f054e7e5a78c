"""The code sandbox's cost, side by side with a bare ``subprocess.run`` of the same program.

    python tools/bench_sandbox.py [--repeats 30] [--out benchmarks/results]

Measured in one run, on the same machine:

* executions per second of a trivial Python program (``print(1)``) and of a small compiled C++
  program, sandboxed and bare, and their ratio (the sandbox's overhead: namespaces, mounts,
  seccomp, the supervisor);
* a realistic stdin problem with 10 tests, scored by the ``code`` reward (one sandbox per test)
  against the same 10 bare runs;
* a batch of 16 such samples through the reward scorer's process pool (``reward.num_workers`` =
  the core count) against the same batch scored serially: whether every core works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from r1mega.rewards.code import code_reward  # noqa: E402
from r1mega.rewards.config import RewardConfig  # noqa: E402
from r1mega.sandbox.run import resolve_command, run_sandboxed  # noqa: E402

SUM_CPP = "#include <iostream>\nint main(){ long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }"
PROBLEM = ("import sys\nn = int(sys.stdin.readline())\nxs = sorted(map(int, sys.stdin.readline().split()))\n"
           "print(sum(xs[-3:]))")


def _tests(k: int = 10) -> dict:
    import random

    rng = random.Random(0)
    inputs, outputs = [], []
    for _ in range(k):
        xs = [rng.randint(-1000, 1000) for _ in range(rng.randint(3, 200))]
        inputs.append(f"{len(xs)}\n{' '.join(map(str, xs))}\n")
        outputs.append(f"{sum(sorted(xs)[-3:])}\n")
    return {"input_output": {"inputs": inputs, "outputs": outputs}}


def _rate(fn, repeats: int) -> float:
    fn()  # warm
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=None, help="directory for sandbox.json / sandbox.md")
    args = ap.parse_args()
    rows = []

    py = resolve_command(["python3"])[0]
    sandboxed = _rate(lambda: run_sandboxed(["python3", "-c", "print(1)"], time_limit_s=10), args.repeats)
    bare = _rate(lambda: subprocess.run([py, "-c", "print(1)"], capture_output=True, check=True), args.repeats)
    rows.append(("Python print(1)", "runs/s", sandboxed, bare))

    build = run_sandboxed(["g++", "-O2", "-o", "prog", "prog.cpp"], files={"prog.cpp": SUM_CPP}, outputs=["prog"],
                          time_limit_s=60, memory_mb=2048)
    assert build.status == "ok", build.stderr
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "prog")
        with open(exe, "wb") as f:
            f.write(build.files["prog"])
        os.chmod(exe, 0o755)
        sandboxed = _rate(lambda: run_sandboxed(["./prog"], files={"prog": build.files["prog"]}, stdin="3 4",
                                                time_limit_s=10), args.repeats)
        bare = _rate(lambda: subprocess.run([exe], input=b"3 4", capture_output=True, check=True), args.repeats)
    rows.append(("C++ a+b (compiled)", "runs/s", sandboxed, bare))

    meta = _tests(10)
    cfg = RewardConfig(weights={"code": 1.0}, timeout_s=60, num_workers=0)
    text = f"```python\n{PROBLEM}\n```"
    assert code_reward(text, None, meta, cfg).score == 1.0
    reps = max(3, args.repeats // 10)
    sandboxed = _rate(lambda: code_reward(text, None, meta, cfg), reps)

    def bare_problem():
        for i in meta["input_output"]["inputs"]:
            subprocess.run([py, "-c", PROBLEM], input=i.encode(), capture_output=True, check=True)
    bare = _rate(bare_problem, reps)
    rows.append(("10-test stdin problem (code reward)", "samples/s", sandboxed, bare))

    from r1mega.rewards.scorer import RewardScorer
    from r1mega.types import Sample

    cores = os.cpu_count() or 1
    batch = 16

    def samples():
        return [Sample(prompt_ids=[1], response_ids=[2], response_text=text, answer=None, metadata=dict(meta),
                       group_id=i, kind="reasoning") for i in range(batch)]

    timings = {}
    for workers in (0, cores):
        c = RewardConfig(weights={"code": 1.0}, timeout_s=120, num_workers=workers)
        scorer = RewardScorer(c)
        try:
            scorer.score(samples())  # warm the pool
            t0 = time.perf_counter()
            got = samples()
            scorer.score(got)
            timings[workers] = batch / (time.perf_counter() - t0)
            assert all(s.reward_breakdown.get("code") == 1.0 for s in got), got[0].reward_breakdown
        finally:
            scorer.close()
    rows.append((f"batch of {batch}: pool of {cores} vs serial", "samples/s", timings[cores], timings[0]))

    head = ("| workload | unit | sandboxed | bare | sandboxed / bare time | added per run |\n"
            "|---|---|---:|---:|---:|---:|")
    lines = [head] + [f"| {name} | {unit} | {s:.1f} | {b:.1f} | {b / s:.2f}x | {1e3 * (1 / s - 1 / b):.1f} ms |"
                      for name, unit, s, b in rows]
    lines[-1] = (f"| {rows[-1][0]} | {rows[-1][1]} | {rows[-1][2]:.1f} (pool) | {rows[-1][3]:.1f} (serial) | "
                 f"{rows[-1][2] / rows[-1][3]:.2f}x faster | |")
    text_table = "\n".join(lines)
    print(text_table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        from r1mega.recipes.seeds import machine_info

        meta_out = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info()["cpu"],
                    "cores": cores, "python": platform.python_version(),
                    "command": f"python tools/bench_sandbox.py --repeats {args.repeats} --out {os.path.relpath(args.out, ROOT)}"}
        with open(os.path.join(args.out, "sandbox.json"), "w") as f:
            json.dump({**meta_out, "rows": [dict(zip(("workload", "unit", "sandboxed", "bare"), r)) for r in rows]},
                      f, indent=1)
        with open(os.path.join(args.out, "sandbox.md"), "w") as f:
            f.write(f"# Code sandbox cost\n\n`{meta_out['command']}` on {meta_out['date']} ({meta_out['machine']}, "
                    f"{cores} cores, Python {meta_out['python']}).\n\n{text_table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
