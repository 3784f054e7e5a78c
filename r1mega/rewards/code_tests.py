"""Test cases of code prompts, in the layouts of the common datasets, and how outputs are compared.
Pure Python.

Layouts (a row's metadata holds one; :func:`load_code_tests` finds it):

    APPS / TACO      ``input_output``: {"inputs": [...], "outputs": [...]} (a dict or its JSON text);
                     with ``fn_name`` the tests are calls (inputs: argument lists, outputs: return
                     values, sometimes wrapped in a one-element list), else stdin/stdout strings.
    LiveCodeBench    ``public_test_cases`` / ``private_test_cases`` / ``test_cases``: a list (or its JSON
                     text) of {"input", "output", "testtype": "stdin" | "functional"}; a functional
                     test's input is one JSON argument per line and its output JSON, the function
                     ``metadata["func_name"]`` (a method of ``class Solution`` or a plain function).
    CodeContests     ``tests`` (or ``public_tests`` + ``private_tests`` + ``generated_tests``):
                     {"input": [...], "output": [...]}: stdin/stdout.

Output comparison (:func:`outputs_match`), the rule every layout's stdout tests use:

    1. both outputs are split into lines; trailing whitespace of each line and trailing empty
       lines are dropped (a missing final newline, Windows line ends and trailing spaces are
       not errors);
    2. the line counts must agree, and within each line the whitespace-separated tokens;
    3. two tokens match when they are equal strings, or when both are numbers and
       |got - want| <= tol * max(1, |want|) (absolute for small values, relative for large;
       ``tol`` = ``reward.code_float_tol``, default 1e-5 as CodeContests' checkers). "1" and
       "1.0" therefore match; "YES" and "yes" do not.

A call test's return value matches when it equals the expected value after JSON round-tripping
(tuples are lists), with the same tolerance for floats, or when the expected value is a
one-element list holding it (APPS wraps some outputs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any


LCB_FIELDS = ("public_test_cases", "private_test_cases", "test_cases")
CODECONTESTS_FIELDS = ("tests", "public_tests", "private_tests", "generated_tests")
TEST_FIELDS = ("input_output", *LCB_FIELDS, *CODECONTESTS_FIELDS)
"""The row fields that hold code tests: a row with one is a code prompt."""
LANGUAGES = {"python": "python", "py": "python", "python3": "python", "cpp": "cpp", "c++": "cpp", "cc": "cpp",
             "cxx": "cpp"}
"""Spellings of a program's language (a code fence's tag, a row's ``language``) -> python | cpp."""


@dataclass(frozen=True)
class CodeTest:
    kind: str                   # "stdio" | "call"
    input: Any                  # stdin text, or the argument list of a call
    expected: Any               # stdout text, or the return value
    fn_name: str | None = None  # call tests: the function (or Solution method) to call


class CodeTestError(ValueError):
    """A row's tests are missing or malformed (a data problem, named with the field)."""


def _json(value, field: str):
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as e:
            raise CodeTestError(f"{field}: not valid JSON ({e.msg}, column {e.colno})") from None
    return value


def _apps(meta: dict) -> list[CodeTest]:
    io = _json(meta["input_output"], "input_output")
    if not isinstance(io, dict) or not isinstance(io.get("inputs"), list) or not isinstance(io.get("outputs"), list):
        raise CodeTestError("input_output: expected {\"inputs\": [...], \"outputs\": [...]}")
    if len(io["inputs"]) != len(io["outputs"]):
        raise CodeTestError(f"input_output: {len(io['inputs'])} inputs but {len(io['outputs'])} outputs")
    fn = io.get("fn_name") or meta.get("fn_name")
    if fn:
        return [CodeTest("call", list(i) if isinstance(i, (list, tuple)) else [i], o, fn)
                for i, o in zip(io["inputs"], io["outputs"])]
    return [CodeTest("stdio", _text(i), _text(o)) for i, o in zip(io["inputs"], io["outputs"])]


def _text(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _livecodebench(meta: dict, field: str) -> list[CodeTest]:
    cases = _json(meta[field], field)
    if not isinstance(cases, list):
        raise CodeTestError(f"{field}: expected a list of {{input, output, testtype}}")
    out = []
    for i, c in enumerate(cases):
        if not isinstance(c, dict) or "input" not in c or "output" not in c:
            raise CodeTestError(f"{field}[{i}]: expected {{input, output, testtype}}")
        if c.get("testtype", "stdin") == "functional":
            fn = meta.get("func_name") or (meta.get("metadata") or {}).get("func_name")
            if not fn:
                raise CodeTestError(f"{field}[{i}]: a functional test needs metadata 'func_name'")
            args = [json.loads(line) for line in str(c["input"]).splitlines() if line.strip()]
            out.append(CodeTest("call", args, json.loads(c["output"]), fn))
        else:
            out.append(CodeTest("stdio", str(c["input"]), str(c["output"])))
    return out


def _codecontests(meta: dict) -> list[CodeTest]:
    out = []
    fields = [f for f in CODECONTESTS_FIELDS if f in meta]
    for f in fields:
        t = _json(meta[f], f)
        if not isinstance(t, dict) or len(t.get("input", [])) != len(t.get("output", [])):
            raise CodeTestError(f"{f}: expected {{\"input\": [...], \"output\": [...]}} of equal length")
        out += [CodeTest("stdio", i, o) for i, o in zip(t["input"], t["output"])]
    return out


def load_code_tests(meta: dict) -> list[CodeTest]:
    """The row's test cases (see the module docstring); :class:`CodeTestError` when none."""
    if "input_output" in meta:
        tests = _apps(meta)
    elif any(f in meta for f in LCB_FIELDS):
        tests = [t for f in LCB_FIELDS if f in meta for t in _livecodebench(meta, f)]
    elif any(f in meta for f in CODECONTESTS_FIELDS):
        tests = _codecontests(meta)
    else:
        raise CodeTestError("no tests: a code row needs input_output (APPS/TACO), public_test_cases / "
                              "private_test_cases / test_cases (LiveCodeBench) or tests / public_tests / "
                              f"private_tests (CodeContests); its fields: {', '.join(sorted(map(str, meta)))}")
    if not tests:
        raise CodeTestError("the row's tests are empty")
    return tests


def _number(token: str) -> float | None:
    try:
        x = float(token)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def tokens_match(got: str, want: str, tol: float) -> bool:
    if got == want:
        return True
    a, b = _number(got), _number(want)
    return a is not None and b is not None and abs(a - b) <= tol * max(1.0, abs(b))


def outputs_match(got: str, want: str, tol: float = 1e-5) -> bool:
    """Whether stdout ``got`` matches ``want`` (the rule of the module docstring)."""
    def lines(s: str) -> list[str]:
        out = [line.rstrip() for line in s.replace("\r\n", "\n").split("\n")]
        while out and not out[-1]:
            out.pop()
        return out

    g, w = lines(got), lines(want)
    if len(g) != len(w):
        return False
    for gl, wl in zip(g, w):
        gt, wt = gl.split(), wl.split()
        if len(gt) != len(wt) or not all(tokens_match(x, y, tol) for x, y in zip(gt, wt)):
            return False
    return True


def values_match(got: Any, want: Any, tol: float = 1e-5) -> bool:
    """A call test's return value against the expected one (module docstring)."""
    def same(a, b) -> bool:
        if isinstance(a, bool) or isinstance(b, bool):
            return a is b or a == b and type(a) is type(b)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return abs(a - b) <= tol * max(1.0, abs(b))
        if isinstance(a, list) and isinstance(b, list):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, dict) and isinstance(b, dict):
            return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return a == b

    got = json.loads(json.dumps(got))
    want = json.loads(json.dumps(want))
    return same(got, want) or (isinstance(want, list) and len(want) == 1 and same(got, want[0]))
