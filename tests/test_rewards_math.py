"""Math answer extraction and equivalence: the case table in tests/data plus targeted checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from r1mega.config.base import ConfigError
from r1mega.rewards import extract_answer, is_equiv
from r1mega.rewards import math_verify
from r1mega.rewards.math_verify import CheckTimeout, latex_to_sympy_string, time_limit

CASES_FILE = Path(__file__).parent / "data" / "math_equivalence_cases.tsv"


def _cases():
    rows = []
    for n, line in enumerate(CASES_FILE.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#") or not line.strip():
            continue
        pred, ref, expected, style = line.split("\t")
        rows.append(pytest.param(pred, ref, expected == "1", id=f"L{n}-{style}"))
    return rows


CASES = _cases()


def test_case_table_is_large_and_balanced():
    assert len(CASES) >= 150
    n_true = sum(c.values[2] for c in CASES)
    assert 50 <= n_true <= len(CASES) - 50


@pytest.mark.parametrize("pred,ref,expected", CASES)
def test_equivalence_table(pred, ref, expected):
    assert is_equiv(pred, ref, timeout_s=2.0) is expected


@pytest.mark.parametrize("pred,ref,expected", CASES[::7])
def test_equivalence_is_symmetric(pred, ref, expected):
    assert is_equiv(ref, pred, timeout_s=2.0) is expected


@pytest.mark.parametrize("text,mode,expected", [
    (r"so the result is \boxed{\frac{1}{\sqrt{2}}}.", "boxed", r"\frac{1}{\sqrt{2}}"),
    (r"first \boxed{1} then \boxed{\{1, \{2\}\}}", "boxed", r"\{1, \{2\}\}"),
    (r"\boxed{x^{2^{3}}} done", "boxed", r"x^{2^{3}}"),
    (r"we get $\boxed 5$.", "boxed", "5"),
    (r"\fbox{42}", "boxed", "42"),
    (r"unbalanced \boxed{3", "boxed", None),
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "hashes", "72"),
    ("#### 1,234\n", "hashes", "1,234"),
    ("Thus, the answer is $\\frac{3}{4}$.", "answer_is", r"\frac{3}{4}"),
    ("The final answer is: 12 apples.\nThanks", "answer_is", "12 apples"),
    ("Answer: (B)", "answer_is", "(B)"),
    ("I got 3 apples and then 4.5 pears", "last_number", "4.5"),
    ("it costs 1,200 dollars, or -7/3 per unit", "last_number", "-7/3"),
    ("no digits here", "last_number", None),
    (r"the answer is 7 but \boxed{8}", "boxed,answer_is", "8"),
    ("the answer is 7, not 6", ("boxed", "answer_is"), "7, not 6"),
    ("6 then 9", "boxed,hashes,answer_is,last_number", "9"),
])
def test_extract_answer(text, mode, expected):
    assert extract_answer(text, mode) == expected


def test_extract_answer_unknown_mode_lists_valid():
    with pytest.raises(ConfigError, match="boxed.*last_number"):
        extract_answer("x", "boxd")


def test_extract_then_compare_end_to_end():
    response = "We compute 2+2 carefully.\nThe answer is $\\boxed{\\dfrac{8}{2}}$."
    assert is_equiv(extract_answer(response), "4")
    assert not is_equiv(extract_answer(response), "5")
    assert not is_equiv(None, "4")


def test_time_limit_interrupts_busy_loop():
    t0 = time.monotonic()
    with pytest.raises(CheckTimeout):
        with time_limit(0.2):
            while True:
                pass
    assert time.monotonic() - t0 < 1.0


def test_slow_check_counts_as_not_equivalent(monkeypatch):
    def hang(p, r):
        time.sleep(30)
        return True

    monkeypatch.setattr(math_verify, "_sympy_equal", hang)
    t0 = time.monotonic()
    assert is_equiv("x^2", "x*x", timeout_s=0.3) is False
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "x.__class__", "open('f')", r"\input{/etc/passwd}",
                                  "lambda: 1", "2^{99999999}", "12345!"])
def test_sympy_path_refuses_code_and_huge_numbers(text):
    assert latex_to_sympy_string(text) is None
    assert is_equiv(text, "1", timeout_s=1.0) is False


def test_latex_translation():
    assert latex_to_sympy_string(r"\frac{1}{\sqrt{2}}") == "((1)/( sqrt(2) ))"
    assert latex_to_sympy_string(r"\log_2 \frac{1}{8}") == " log(((1)/(8)),2) "
    assert latex_to_sympy_string(r"\log_{10} 1000 + x\sqrt{x}") == " log(1000,10)  + x sqrt(x) "
    assert latex_to_sympy_string(r"\sqrt[3]{x}") == "((x)**(1/(3)))"
    assert latex_to_sympy_string(r"2^{10}\cdot xy") == "2**(10)* x*y"
