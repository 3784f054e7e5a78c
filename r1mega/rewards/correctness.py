"""Which reward says whether a response is *right*, per row: eval's pass@1, rejection sampling's
"incorrect" filter and the training step's ``acc/mean`` all read this one, so a code or countdown
prompt is judged by its own checker and not by the math answer comparison.

    1. the row's ``correctness`` field (a reward name), when it has one;
    2. ``code`` for a row with code tests (r1mega.rewards.code_tests' layouts);
    3. ``countdown`` for a countdown row (``task: countdown``);
    4. ``accuracy`` (the math answer compared with the reference).

A response is correct when that reward's unweighted score is >= 1.
"""

from __future__ import annotations

from typing import Callable, Mapping

from r1mega.rewards.code_tests import TEST_FIELDS


def correctness_reward(meta: Mapping) -> str:
    """The name of the reward that judges a response to the row with metadata ``meta``."""
    named = meta.get("correctness")
    if isinstance(named, str) and named:
        return named
    if any(f in meta for f in TEST_FIELDS):
        return "code"
    if meta.get("task") == "countdown":
        return "countdown"
    return "accuracy"


def with_correctness_rewards(weights: Mapping[str, float], metas,
                             judge: Callable[[Mapping], str] = correctness_reward) -> dict[str, float]:
    """``weights`` plus, at weight 0, every correctness reward (``judge``) the rows need that it
    lacks: scored (so it can be read) without changing the reward."""
    out = dict(weights)
    for meta in metas:
        out.setdefault(judge(meta), 0.0)
    return out


def is_correct(sample) -> bool:
    """Whether ``sample`` (scored) is right by its row's correctness reward."""
    return float(sample.reward_breakdown.get(correctness_reward(sample.metadata), 0.0)) >= 1.0
