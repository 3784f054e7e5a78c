"""The code reward: run the answer's program against the row's tests in the sandbox.

    score = 1 when every test passes (``reward.code_scoring: all_pass``, stopping at the first
            failure), or the share of tests passed (``fraction``)

1. The answer is the last fenced code block of the answer part (after ``</think>``, as for math);
   its language is the fence's tag (``python``/``py``/``python3``, ``cpp``/``c++``/``cc``), else the
   row's ``language``, else ``reward.code_language``. No block: 0, "no code block".
2. The tests come from the row (:mod:`r1mega.rewards.code_tests`: APPS/TACO, LiveCodeBench,
   CodeContests layouts and the output comparison rule).
3. C++ is compiled once per sample (``g++ -O2 -std=c++17``, ``reward.code_compile_time_s``); a
   compile error scores 0 with the compiler's message in the info. Python runs as ``python3``.
4. Each test runs in its own sandbox (:func:`r1mega.sandbox.run.run_sandboxed`) with
   ``code_memory_mb`` and ``reward.code_test_time_s`` of CPU time (the kernel's RLIMIT_CPU, whole
   seconds, rounded up) within a wall clock of 3x that + 1 s (:func:`wall_limit`): the verdict does
   not depend on how busy the machine is. All of a sample's tests share the wall-clock budget
   ``reward.code_budget_s``, past which the remaining tests fail. A wrong answer, a runtime error
   and a timeout (CPU or wall) fail a test.
5. A sandbox that cannot run at all (no launcher, no user namespaces) raises
   :class:`SandboxInfrastructureError`: the scorer records it as the sample's error (counted in
   ``reward/error`` and logged with the cause), never as a wrong program.
"""

from __future__ import annotations

import json
import re
import time

from r1mega.rewards.code_tests import LANGUAGES, CodeTest, load_code_tests, outputs_match, values_match
from r1mega.rewards.result import RewardResult

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
RESULT_MARK = "\n__r1mega_result__"
# Runs a call test: the solution is loaded as a module, the function (or Solution's method) called
# with the JSON arguments on stdin, its value printed after a marker (the program may print too).
CALL_DRIVER = """import json, sys
sys.setrecursionlimit(100000)
ns = {"__name__": "solution"}
exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
name = sys.argv[1]
fn = ns.get(name)
if fn is None and isinstance(ns.get("Solution"), type):
    fn = getattr(ns["Solution"](), name)
if fn is None:
    sys.exit("no function " + name)
value = fn(*json.loads(sys.stdin.read()))
sys.stdout.write(%r + json.dumps(value, default=list))
""" % RESULT_MARK


class SandboxInfrastructureError(RuntimeError):
    """The sandbox failed (not the program): the sample's reward is an error, not a 0."""


def extract_code(text: str) -> tuple[str, str] | None:
    """(fence tag, code) of the last fenced block of ``text`` (tag "" when the fence has none)."""
    found = _FENCE.findall(text)
    if not found:
        return None
    tag, code = found[-1]
    return tag.lower(), code


def _sandbox(argv, cfg, **kw):
    from r1mega.sandbox.run import SandboxUnavailable, run_sandboxed

    try:
        res = run_sandboxed(argv, memory_mb=cfg.code_memory_mb, output_limit_bytes=cfg.code_output_limit_kb * 1024,
                            **kw)
    except SandboxUnavailable as e:
        raise SandboxInfrastructureError(str(e)) from None
    if res.infrastructure_error:
        raise SandboxInfrastructureError(f"the sandbox failed: {res.error.strip()}")
    return res


def wall_limit(cpu_s: float) -> float:
    """A test's wall-clock limit for a CPU-time limit of ``cpu_s``: 3x + 1 s. The verdict is CPU
    time, so a correct program on a machine slowed by other sandboxes (a hostile sample's fork
    bomb in the next pool worker) still passes; the wall clock stops a program that sleeps or
    blocks."""
    return 3.0 * cpu_s + 1.0


def _run_test(test: CodeTest, lang: str, program: dict, cfg, cpu_s: float, wall_s: float) -> tuple[bool, str]:
    """(passed, why not) of one test."""
    limits = dict(cpu_limit_s=cpu_s, time_limit_s=wall_s)
    if test.kind == "call":
        if lang != "python":
            return False, "call tests need Python"
        res = _sandbox(["python3", "driver.py", test.fn_name], cfg, files={**program, "driver.py": CALL_DRIVER},
                       stdin=json.dumps(test.input), **limits)
    else:
        argv = ["python3", "solution.py"] if lang == "python" else ["./solution"]
        res = _sandbox(argv, cfg, files=program, stdin=test.input, **limits)
    if res.status == "timeout":
        return False, "timeout"
    if res.status != "ok":
        return False, f"runtime error ({res.status} {res.exit_code}): {res.stderr.strip()[-300:]}"
    if test.kind == "call":
        out, mark, value = res.stdout.rpartition(RESULT_MARK)
        if not mark:
            return False, "no return value"
        ok = values_match(json.loads(value), test.expected, cfg.code_float_tol)
    else:
        ok = outputs_match(res.stdout, test.expected, cfg.code_float_tol)
    return ok, "" if ok else "wrong answer"


def code_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """Score the answer's program on the row's tests (module docstring)."""
    from r1mega.rewards.accuracy import answer_part

    text = answer_part(response, meta, cfg)
    if text is None:
        return RewardResult(0.0, {"reason": "reasoning not closed"})
    found = extract_code(text)
    if found is None:
        return RewardResult(0.0, {"reason": "no code block"})
    tag, code = found
    lang = LANGUAGES.get(tag) or LANGUAGES.get(str(meta.get("language", "")).lower()) or cfg.code_language
    tests = load_code_tests(meta)
    deadline = time.monotonic() + cfg.code_budget_s
    if lang == "cpp":
        build = _sandbox(["g++", "-O2", "-std=c++17", "-o", "solution", "solution.cpp"], cfg,
                         files={"solution.cpp": code}, outputs=["solution"], time_limit_s=cfg.code_compile_time_s)
        if build.status != "ok" or "solution" not in build.files:
            why = "compile timeout" if build.status == "timeout" else "compile error"
            return RewardResult(0.0, {"reason": why, "lang": lang, "tests": len(tests),
                                      "compiler": build.stderr.strip()[-500:]})
        program = {"solution": build.files["solution"]}
    else:
        program = {"solution.py": code}
    passed, first_failure, out_of_budget = 0, None, False
    for i, test in enumerate(tests):
        left = deadline - time.monotonic()
        if left <= 0.05:
            first_failure = first_failure or f"test {i}: the sample's budget (reward.code_budget_s) ran out"
            out_of_budget = True
            break
        ok, why = _run_test(test, lang, program, cfg, min(cfg.code_test_time_s, left),
                            min(wall_limit(cfg.code_test_time_s), left))
        passed += ok
        if not ok:
            first_failure = first_failure or f"test {i}: {why}"
            if cfg.code_scoring == "all_pass":
                break
    if passed == len(tests):
        score = 1.0
    else:
        score = passed / len(tests) if cfg.code_scoring == "fraction" else 0.0
    info = {"lang": lang, "passed": passed, "tests": len(tests)}
    if out_of_budget:
        info["budget_exhausted"] = True
    if first_failure:
        info["first_failure"] = first_failure
    return RewardResult(score, info)
