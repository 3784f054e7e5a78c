"""Accuracy reward for math: extract the final answer, compare it with the reference by rule."""

from __future__ import annotations

import re

from r1mega.rewards.math_extract import extract_answer
from r1mega.rewards.math_verify import is_equiv
from r1mega.rewards.result import RewardResult


def answer_part(response: str, meta: dict, cfg) -> str | None:
    """The text that holds the final answer: after the last ``</think>`` when ``cfg.extract_after_think``
    (None when the reasoning was opened but never closed: no answer was given), else the whole text."""
    if not cfg.extract_after_think:
        return response
    i = response.rfind("</think>")
    if i >= 0:
        return response[i + len("</think>"):]
    if "<think>" in response or meta.get("think_prefilled", cfg.think_prefilled):
        return None
    return response


def accuracy_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """1.0 when the extracted answer is equivalent to the reference answer, else 0.0.

    Extraction follows ``cfg.extract_order`` (boxed, ####, "the answer is", last number); the
    comparison is :func:`~r1mega.rewards.math_verify.is_equiv` with ``cfg.math_timeout_s``.
    """
    if answer is None:
        return RewardResult(0.0, {"pred": None, "reason": "no reference answer"})
    text = answer_part(response, meta, cfg)
    if text is None:
        return RewardResult(0.0, {"pred": None, "reason": "reasoning not closed"})
    text = re.sub(r"</?answer>", " ", text)
    pred = extract_answer(text, cfg.extract_order)
    ok = is_equiv(pred, answer, timeout_s=cfg.math_timeout_s)
    return RewardResult(1.0 if ok else 0.0, {"pred": pred})
