"""The accuracy reward against hand-written cases: realistic responses in MATH, GSM8K, AIME, AMC and
olympiad style, each with a gold answer and the verdict of a careful grader (tests/data/
math_verify_cases.jsonl; the conventions are in r1mega/rewards/math_extract.py and math_verify.py).
Every case is graded from the raw response by the reward RL training uses. The same cases, graded by
Math-Verify beside r1mega: ``python tools/bench_math_verify.py``."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from r1mega.rewards.accuracy import accuracy_reward
from r1mega.rewards.config import RewardConfig
from r1mega.rewards.math_extract import extract_answer
from r1mega.rewards.math_verify import is_equiv

CASES = [json.loads(line) for line in
         (Path(__file__).parent / "data" / "math_verify_cases.jsonl").read_text(encoding="utf-8").splitlines()
         if line.strip()]
KINDS = ("integer", "decimal_fraction", "percent", "latex_noise", "radical", "pi", "expression", "tuple_point",
         "interval", "set", "multi_answer", "scientific", "nested_braces", "several_boxes", "no_answer_truncation",
         "units", "answer_phrase", "matrix", "choice", "thousands_separator", "repeating_decimal", "mixed_number",
         "inequality", "evaluable", "assignment")
CFG = RewardConfig()


def test_the_suite_covers_every_kind_with_both_verdicts():
    assert len(CASES) >= 300
    assert len({c["id"] for c in CASES}) == len(CASES)
    by_kind = collections.defaultdict(list)
    for c in CASES:
        by_kind[c["kind"]].append(c["expected"])
    assert set(by_kind) == set(KINDS)
    for kind, verdicts in by_kind.items():
        assert len(verdicts) >= 15 and any(verdicts) and not all(verdicts), kind


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case):
    got = accuracy_reward(case["response"], case["gold"], {}, CFG)
    assert (got.score == 1.0) is case["expected"], (got.info, case["gold"], case["why"])


# ------------------------------------------------------------------------- conventions, one by one
@pytest.mark.parametrize("text,expected", [
    (r"first \boxed{3}, then on reflection \boxed{}", None),                  # empty last box: no answer
    (r"so the answer is \boxed{\frac{3}{4", None),                            # truncated inside the box
    ("Final Answer: The final answer is $\\frac{7}{2}$. I hope it is correct.", r"\frac{7}{2}"),
    ("Final Answer: The final answer is $$. I hope it is correct.", None),
    ("6 * 7 = 42 bottles.\n\n**Answer:** 42", "42"),
    ("The answer is:\n\n$17$", "17"),
    ("... and therefore the answer is", None),                               # cut off after the phrase
    ("Since $k<0$, the value of $k$ is $-4$.", "-4"),                       # a concluding statement
    ("Adding the equations, $2x = 14$. Hence $x = 7$.", "7"),
    ("so 16 - 3 - 4 = 9 eggs remain, and 9 * 2 = 18 dollars. Now we need", None),  # no last-number fallback
    ("<think>2+3</think> <answer> 5 </answer>", "5"),
    ("<think>r</think> <answer> The answer is $12$. </answer>", "12"),
    ("The total is 5 + 7 = 12. So she has 12 apples left.", "12"),        # a plain-text conclusion
    ("Thus the area of the triangle is $24$ square units.", "24"),
    ("The values are $x=2$ and $x=3$.", "2, 3"),
    ("The answer is 12, since 3*4=12.", "12"),
    ("The answer is 17. Let me double-check: 17 is prime.", "17"),
    (" 432", "432"),                                                           # a lone answer
    ("I don't know how to solve this problem.", None),
])
def test_extraction(text, expected):
    from r1mega.rewards.accuracy import answer_part

    assert extract_answer(answer_part(text, {}, CFG)) == expected


@pytest.mark.parametrize("pred,ref,expected", [
    (r"1{,}000", "1000", True), (r"12,\!345", "12345", True), (r"1\,000", "1000", True), ("1,000.5", "1000.5", True),
    (r"0.\overline{6}", r"\frac23", True), (r"0.1\overline{6}", r"\frac{1}{6}", True), ("-0.\\overline{3}", "-1/3", True),
    (r"3\frac{1}{4}", "13/4", True), (r"3\frac14", "3.25", True), ("0.625", r"\frac58", True),
    ("0.67", r"\frac{2}{3}", False), ("1.732", r"\sqrt{3}", False), ("3.14", r"\pi", False),
    (r"40\%", "40", True), ("40 percent", "40", True), ("0.4", r"40\%", False), (r"50\%", "0.5", False),
    (r"18\text{ cm}^2", "18", True), (r"\$2{,}500", "2500", True), (r"60^\circ", "60", True),
    (r"8\pi \text{ square units}", r"8\pi", True), (r"60^\circ", r"\frac{\pi}{3}", False),
    ("x = 3", "3", True), ("(a, b) = (1, 4)", "(1,4)", True), ("y = 2x + 1", "2x+1", True),
    (r"\log_3 27", "3", True), (r"\dbinom{8}{4}", "70", True), (r"\log_2 \frac{1}{8}", "-3", True),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\begin{bmatrix} 1 & 2 \\ 3 & 4 \end{bmatrix}", True),
    (r"\begin{pmatrix} 0.5 \\ 3 \end{pmatrix}", r"\begin{pmatrix} \frac12 \\ 3 \end{pmatrix}", True),
    (r"\begin{pmatrix} 1 & 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", False),   # shape
    (r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", False),  # order
    (r"(1, 2]", "(1,2]", True), ("(1, 2]", "[1,2]", False), (r"(3,\infty)\cup(-\infty,1)", r"(-\infty,1)\cup(3,\infty)", True),
    (r"-2 \le x \le 5", "[-2,5]", True), ("x > 3", r"(3,\infty)", True), (r"5 \geq x > -1", "(-1,5]", True),
    (r"x < -2 \text{ or } x > 3", r"(-\infty,-2)\cup(3,\infty)", True), (r"x \le 4", r"(-\infty,4)", False),
    (r"\pm 3", "3, -3", True), (r"x = 1 \text{ or } x = 5", "5, 1", True), (r"3 \text{ and } 4", "3, 4", True),
    (r"1 \pm \sqrt{2}", r"1-\sqrt{2}, 1+\sqrt{2}", True), (r"\pm 2", "2", False),
    (r"\{1, 2, 3\}", r"\{3, 1, 2\}", True), ("(1, 2)", "(2, 1)", False),
    ("(C)", "C", True), (r"\text{(C)}", "C", True), ("C", r"\textbf{(C) }12", True), ("D", r"\textbf{(C) }12", False),
    ("3.2e4", "32000", True), (r"3.2 \times 10^4", "32000", True), ("Alice and Bob", "alice and bob", True),
])
def test_equivalence(pred, ref, expected):
    assert is_equiv(pred, ref) is expected
    assert is_equiv(ref, pred) is expected
