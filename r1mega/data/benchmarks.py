"""Benchmark layouts: how one raw row of a common benchmark file becomes (question, reference answer).

``data.format`` (``load_prompts(format=...)``, ``r1mega eval --format``) names the layout:

    gsm8k    GSM8K: ``question`` / ``answer``; the reference is the text after the last ``####``
             of ``answer`` ("... so she sold 1,234 clips. #### 1,234" -> "1234"). A row without
             ``####`` is an error.
    math     MATH and MATH-500: ``problem`` / the row's ``answer`` when it has one (MATH-500),
             otherwise the last ``\\boxed{...}`` or ``\\fbox{...}`` of ``solution``, braces
             balanced (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``), read by the verifier's
             :func:`r1mega.rewards.math_extract.extract_boxed`. Neither is an error.
    aime     AIME: ``problem`` (or ``question``) / ``answer``; numbers become text (``204`` -> "204").
    code     programming problems with tests (APPS/TACO ``input_output``, LiveCodeBench
             ``public_test_cases``..., CodeContests ``tests``/``public_tests``...; see
             :mod:`r1mega.rewards.code_tests`): ``question`` / ``problem`` / ``question_content`` /
             ``description``, no reference answer (the tests stay in the metadata and the ``code``
             reward runs them); the prompt asks for a fenced program (the row's ``language``,
             python or cpp, default python).
    amc      AMC: the layout of aime (``142.0`` -> "142").
    generic  ``data.question_key`` / ``data.answer_key``: the mapping of
             :func:`r1mega.data.prompts.load_prompts` before layouts existed, with its messages.
    auto     one of the above, read off the first row by :func:`detect_format` (``data.format``'s
             default).

A field may also be spelled capitalised (``Problem``, ``Solution``, ``Answer``), as some hub
copies do. Every answer goes through :func:`r1mega.data.prompts.normalize_answer` (numbers as
text, ``1,234`` -> ``1234``). The row's other fields stay in the record's ``metadata``, as in the
generic layout, and the named layouts add ``benchmark`` (:func:`benchmark_name`).

Detection (``auto``) reads the first row's keys only, and the first rule that matches wins:

    1. data.question_key / data.answer_key are not question / answer  -> generic (the fields are named)
    2. a field of code tests (input_output, public_test_cases, tests...) -> code
    3. question, and an answer that is a string holding "####"       -> gsm8k
    4. problem and solution                                           -> math (MATH-500 rows too)
    5. problem and answer                                             -> aime (= amc)
    6. anything else                                                  -> generic

The choice and its rule are logged (logger ``r1mega.data``, INFO).
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from r1mega.data.prompts import DataError, _answer, _question, normalize_answer

log = logging.getLogger("r1mega.data")

FORMATS = ("auto", "generic", "gsm8k", "math", "aime", "amc", "code")
"""The values of ``data.format``."""

Adapter = Callable[[dict, str], tuple[str, str, tuple[str, ...]]]
"""(row, where) -> (question, reference answer, the row's keys they came from)."""


def benchmark_name(source: str) -> str:
    """A benchmark's default name: the file or directory stem (``data/math500.jsonl`` -> ``math500``,
    ``openai/gsm8k`` -> ``gsm8k``)."""
    return os.path.splitext(os.path.basename(source.rstrip("/")))[0]


def _key(row: dict, name: str) -> str | None:
    """``name`` or ``Name``, whichever the row has (None: neither)."""
    return next((k for k in (name, name.capitalize()) if k in row), None)


def _need(row: dict, where: str, layout: str, *names: str) -> str:
    """The row's key for the first of ``names`` it has; a DataError naming the row otherwise."""
    for name in names:
        key = _key(row, name)
        if key is not None:
            return key
    fields = " or ".join(repr(n) for n in names)
    raise DataError(f"{where} has no {fields} field (data.format {layout}); its keys: {_keys(row)}")


def _keys(row: dict) -> str:
    return ", ".join(sorted(map(str, row)))


def _clip(value, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def gsm8k_row(row: dict, where: str) -> tuple[str, str, tuple[str, ...]]:
    """GSM8K: the question, and the final answer after the last ``####``."""
    what = "data.format gsm8k"
    q, a = _need(row, where, "gsm8k", "question"), _need(row, where, "gsm8k", "answer")
    if not isinstance(row[a], str) or "####" not in row[a]:
        raise DataError(f"{where}: {a!r} has no '####' before the final answer ({what}): {_clip(row[a])}")
    return _question(row, q, where, what), _answer(row, a, "reasoning", where, what), (q, a)


def math_row(row: dict, where: str) -> tuple[str, str, tuple[str, ...]]:
    """MATH / MATH-500: the problem, and the ``answer`` field or else the solution's last box."""
    what = "data.format math"
    q = _need(row, where, "math", "problem")
    question = _question(row, q, where, what)
    a = _key(row, "answer")
    if a is not None and row[a] is not None and str(row[a]).strip():  # MATH-500
        return question, _answer(row, a, "reasoning", where, what), (q, a)
    s = _key(row, "solution")
    if s is None:
        if a is None:
            raise DataError(f"{where} has no 'answer' or 'solution' field ({what}); its keys: {_keys(row)}")
        raise DataError(f"{where}: no reference answer ({what}): {a!r} is {'null' if row[a] is None else 'empty'} "
                        f"and there is no 'solution' field; its keys: {_keys(row)}")
    if not isinstance(row[s], str):
        raise DataError(f"{where}: {s!r} ({what}) is {'null' if row[s] is None else type(row[s]).__name__}, "
                        "expected the solution text")
    from r1mega.rewards.math_extract import extract_boxed

    boxed = extract_boxed(row[s])
    if not boxed:
        why = "its last box is empty or never closed" if boxed == "" else "no \\boxed{} or \\fbox{} in it"
        raise DataError(f"{where}: no reference answer ({what}): no 'answer', and {s!r} has {why}: "
                        f"{_clip(row[s][-60:])}")
    return question, normalize_answer(boxed), (q, s)


def _problem_answer(layout: str) -> Adapter:
    """AIME / AMC: the problem (or question) and the answer, named ``layout`` in errors."""
    def adapt(row: dict, where: str) -> tuple[str, str, tuple[str, ...]]:
        what = f"data.format {layout}"
        q, a = _need(row, where, layout, "problem", "question"), _need(row, where, layout, "answer")
        return _question(row, q, where, what), _answer(row, a, "reasoning", where, what), (q, a)

    return adapt


def code_row(row: dict, where: str) -> tuple[str, None, tuple[str, ...]]:
    """A programming problem: the statement; no reference answer (the tests are the reference)."""
    from r1mega.rewards.code_tests import TEST_FIELDS

    what = "data.format code"
    q = _need(row, where, "code", "question", "problem", "question_content", "description")
    if not any(f in row for f in TEST_FIELDS):
        raise DataError(f"{where} has no tests ({what}): expected one of {', '.join(TEST_FIELDS)}; its keys: "
                        f"{_keys(row)}")
    return _question(row, q, where, what), None, (q,)


LAYOUTS: dict[str, Adapter] = {"gsm8k": gsm8k_row, "math": math_row, "aime": _problem_answer("aime"),
                               "amc": _problem_answer("amc"), "code": code_row}
"""Named layouts (``generic`` is :func:`r1mega.data.prompts.load_prompts`' own mapping)."""


def check_format(fmt: str) -> None:
    """A DataError unless ``fmt`` is one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        raise DataError(f"data.format ({fmt!r}) must be one of: {', '.join(FORMATS)}")


def detect_format(row: dict, question_key: str = "question", answer_key: str = "answer") -> tuple[str, str]:
    """(layout, the rule that picked it) for a file whose first row is ``row`` (module docstring)."""
    if (question_key, answer_key) != ("question", "answer"):
        return "generic", f"data.question_key/answer_key are set ({question_key!r}/{answer_key!r})"
    from r1mega.rewards.code_tests import TEST_FIELDS

    if any(f in row for f in TEST_FIELDS):
        return "code", "a field of code tests"
    answer = row.get(_key(row, "answer") or "answer")
    if _key(row, "question") and isinstance(answer, str) and "####" in answer:
        return "gsm8k", "'question', and an 'answer' with '####'"
    if _key(row, "problem") and _key(row, "solution"):
        return "math", "'problem' and 'solution'"
    if _key(row, "problem") and _key(row, "answer"):
        return "aime", "'problem' and 'answer'"
    return "generic", "no benchmark layout's fields"


def resolve_format(fmt: str, first_row: dict, source: str, question_key: str = "question",
                   answer_key: str = "answer") -> str:
    """``fmt`` itself, or for ``auto`` the detected layout (logged)."""
    check_format(fmt)
    if fmt != "auto":
        return fmt
    layout, why = detect_format(first_row, question_key, answer_key)
    log.info("%s: data.format auto -> %s (first row: %s)", source, layout, why)
    return layout
