"""r1mega's math verifier and Hugging Face's Math-Verify, side by side on the same hand-written cases.

    python tools/bench_math_verify.py [--cases tests/data/math_verify_cases.jsonl] [--out benchmarks/results]

Each case is a realistic model response (MATH, GSM8K, AIME, AMC and olympiad style), a gold answer
and the verdict a careful grader gives (``expected``), grouped by ``kind`` (percent, matrices,
truncated reasoning...). Both verifiers grade every case from the raw response:

* r1mega: :func:`r1mega.rewards.accuracy.accuracy_reward` with the default ``RewardConfig``,
  exactly what RL training rewards;
* Math-Verify (``pip install math-verify``, in r1mega's ``dev`` extra), as its README uses it:
  ``verify(parse("$" + gold + "$"), parse(response))`` with its default extraction (LaTeX and plain
  expressions, boxed first, falling back to the last number).

Printed, per kind: the share of cases each verifier grades as the grader did, and the time per
case. ``--out`` writes ``math_verify.json`` and ``math_verify.md`` there (with the machine and the
versions). Exit code 0 whatever the rates: the test suite holds r1mega's verdicts case by case.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from r1mega.rewards.accuracy import accuracy_reward  # noqa: E402
from r1mega.rewards.config import RewardConfig  # noqa: E402


def load_cases(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                missing = {"id", "kind", "response", "gold", "expected"} - set(row)
                if missing:
                    raise SystemExit(f"{path}: line {n} lacks {', '.join(sorted(missing))}")
                rows.append(row)
    return rows


def r1mega_grader():
    cfg = RewardConfig()
    return lambda response, gold: accuracy_reward(response, gold, {}, cfg).score == 1.0


def math_verify_grader():
    """Math-Verify's verdict, or None when the package is not installed."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None

    def grade(response: str, gold: str) -> bool:
        try:
            return bool(verify(parse(f"${gold}$"), parse(response)))
        except Exception:  # a crash is a "no" for a reward
            return False

    return grade


def grade_all(cases: list[dict], grade) -> tuple[list[bool], float]:
    """(verdicts, seconds per case)."""
    t0 = time.perf_counter()
    verdicts = [grade(c["response"], c["gold"]) for c in cases]
    return verdicts, (time.perf_counter() - t0) / max(1, len(cases))


def agreement(cases: list[dict], verdicts: list[bool]) -> dict[str, dict]:
    """{kind: {"cases", "agree", "rate", "wrong": [ids]}} plus an "all" entry."""
    out: dict[str, dict] = collections.defaultdict(lambda: {"cases": 0, "agree": 0, "wrong": []})
    for case, got in zip(cases, verdicts):
        for key in (case["kind"], "all"):
            out[key]["cases"] += 1
            if got == bool(case["expected"]):
                out[key]["agree"] += 1
            else:
                out[key]["wrong"].append(case["id"])
    for v in out.values():
        v["rate"] = v["agree"] / v["cases"]
    return dict(out)


def table(ours: dict, theirs: dict | None, t_ours: float, t_theirs: float | None) -> str:
    head = "| kind | cases | r1mega | Math-Verify |\n|---|---:|---:|---:|"
    lines = [head]
    for kind in sorted(k for k in ours if k != "all") + ["all"]:
        mv = f"{100 * theirs[kind]['rate']:.1f}%" if theirs else "not installed"
        name = f"**{kind}**" if kind == "all" else kind
        lines.append(f"| {name} | {ours[kind]['cases']} | {100 * ours[kind]['rate']:.1f}% | {mv} |")
    mv_t = f"{1e3 * t_theirs:.2f} ms" if t_theirs is not None else "-"
    lines.append(f"| time per case | | {1e3 * t_ours:.2f} ms | {mv_t} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=os.path.join(ROOT, "tests", "data", "math_verify_cases.jsonl"))
    ap.add_argument("--out", default=None, help="directory for math_verify.json / .md")
    args = ap.parse_args()

    cases = load_cases(args.cases)
    ours_v, t_ours = grade_all(cases, r1mega_grader())
    ours = agreement(cases, ours_v)
    mv = math_verify_grader()
    theirs, t_theirs, mv_version = None, None, None
    if mv is None:
        print("Math-Verify is not installed (pip install math-verify, or r1mega's dev extra): r1mega only.\n")
    else:
        from importlib.metadata import version

        mv_version = version("math-verify")
        theirs_v, t_theirs = grade_all(cases, mv)
        theirs = agreement(cases, theirs_v)
    text = table(ours, theirs, t_ours, t_theirs)
    print(f"{len(cases)} cases from {os.path.relpath(args.cases, ROOT)}: share graded as the grader did\n")
    print(text)
    for name, res in (("r1mega", ours), ("Math-Verify", theirs)):
        if res and res["all"]["wrong"]:
            print(f"\n{name} disagrees on: {', '.join(res['all']['wrong'])}")
    if args.out:
        from importlib.metadata import version

        os.makedirs(args.out, exist_ok=True)
        meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.processor() or platform.machine(),
                "python": platform.python_version(), "sympy": version("sympy"), "math_verify": mv_version,
                "cases": os.path.relpath(args.cases, ROOT), "command": "python tools/bench_math_verify.py --out "
                + os.path.relpath(args.out, ROOT)}
        with open(os.path.join(args.out, "math_verify.json"), "w") as f:
            json.dump({**meta, "r1mega": ours, "math_verify": theirs,
                       "seconds_per_case": {"r1mega": t_ours, "math_verify": t_theirs}}, f, indent=1)
        with open(os.path.join(args.out, "math_verify.md"), "w") as f:
            f.write(f"# Math verification: r1mega vs Math-Verify {mv_version}\n\n`{meta['command']}` on "
                    f"{meta['date']} ({meta['machine']}, Python {meta['python']}, sympy {meta['sympy']}).\n\n"
                    f"{len(cases)} hand-written cases ({meta['cases']}); each cell is the share of the kind's cases "
                    f"graded as the grader did.\n\n{text}\n")
            for name, res in (("r1mega", ours), ("Math-Verify", theirs)):
                if res and res["all"]["wrong"]:
                    f.write(f"\n{name} disagrees on: {', '.join(res['all']['wrong'])}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
