"""The countdown reward: reach ``meta["target"]`` with each of ``meta["numbers"]`` exactly once.

Many expressions are right (and ``is_equiv`` against the reference expression would accept a
bare target), so the answer is checked by evaluating it: :func:`countdown_check`. The problems
come from :func:`r1mega.data.synthetic.countdown_problem`.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction
from typing import Sequence

from r1mega.rewards.accuracy import answer_part
from r1mega.rewards.math_extract import extract_boxed
from r1mega.rewards.result import RewardResult


def countdown_check(expression: str | None, numbers: Sequence[int], target: int | float) -> bool:
    """True when ``expression`` uses each of ``numbers`` exactly once (integers only), only
    ``+ - * /`` and parentheses, and evaluates exactly (fractions) to ``target``. A trailing
    ``= target`` is allowed; ``\\times``/``\\cdot``/``\\div`` are read as ``*``/``/``."""
    if expression is None or len(expression) > 200:
        return False
    expr = expression.replace("\\times", "*").replace("\\cdot", "*").replace("\\div", "/").replace("×", "*")
    expr = expr.replace("\\left", "").replace("\\right", "").strip().strip("$")
    if "=" in expr:
        expr, _, rhs = expr.partition("=")
        try:
            if Fraction(rhs.strip()) != Fraction(target):
                return False
        except (ValueError, ZeroDivisionError):
            return False
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    used: list[int] = []

    def ev(node) -> Fraction:
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div):
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return left + right
            if isinstance(node.op, ast.Sub):
                return left - right
            if isinstance(node.op, ast.Mult):
                return left * right
            return left / right  # ZeroDivisionError -> False below
        if isinstance(node, ast.Constant) and type(node.value) is int:
            used.append(node.value)
            return Fraction(node.value)
        raise ValueError("not allowed")

    try:
        value = ev(tree.body)
    except (ValueError, ZeroDivisionError):
        return False
    return sorted(used) == sorted(int(n) for n in numbers) and value == Fraction(target)


def countdown_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """Reward function (r1mega.rewards signature): 1.0 when the answer after ``</think>`` (the last
    ``\\boxed{}``, else the ``<answer>`` block) passes :func:`countdown_check` for
    ``meta["numbers"]`` and ``meta["target"]``."""
    if "numbers" not in meta or "target" not in meta:
        return RewardResult(0.0, {"pred": None, "reason": "metadata lacks numbers/target"})
    text = answer_part(response, meta, cfg)
    if text is None:
        return RewardResult(0.0, {"pred": None, "reason": "reasoning not closed"})
    pred = extract_boxed(text)
    if pred is None:
        m = re.search(r"<answer>(.*?)</answer>", text, re.DOTALL)
        pred = m.group(1).strip() if m else None
    ok = countdown_check(pred, meta["numbers"], meta["target"])
    return RewardResult(1.0 if ok else 0.0, {"pred": pred})
