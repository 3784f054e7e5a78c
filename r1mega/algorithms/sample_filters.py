"""Sample-level tools from DAPO (arXiv 2503.14476): dynamic sampling, overlong filtering and the
soft overlong punishment. They act on lists of :class:`~r1mega.types.Sample` and return new lists
(the input samples are not modified)."""

from __future__ import annotations

from collections import defaultdict

from r1mega.rewards.length import soft_overlong_penalty
from r1mega.types import Sample

__all__ = ["dynamic_sampling", "overlong_filter", "soft_overlong_penalty", "apply_soft_overlong_penalty"]


def dynamic_sampling(samples: list[Sample], tol: float = 0.0) -> tuple[list[Sample], int]:
    """DAPO dynamic sampling: drop every group whose rewards are all equal (max - min <= tol).

    Such a group (all correct or all wrong) has zero group-normalised advantage and gives no
    gradient; DAPO over-samples and keeps only groups with 0 < accuracy < 1. A group of one sample
    is "all equal" and dropped. Returns (kept samples in input order, number of groups dropped).
    """
    rewards: dict[int, list[float]] = defaultdict(list)
    for s in samples:
        rewards[s.group_id].append(s.reward)
    flat = {g for g, r in rewards.items() if max(r) - min(r) <= tol}
    return [s for s in samples if s.group_id not in flat], len(flat)


def overlong_filter(samples: list[Sample]) -> list[Sample]:
    """DAPO overlong filtering: truncated samples (finish_reason == "length") get ``loss_mask=False``
    so they are excluded from the policy loss (their reward is noise: the answer was cut off)."""
    return [s.replace(loss_mask=False) if s.truncated else s for s in samples]


def apply_soft_overlong_penalty(samples: list[Sample], max_len: int, buffer: int, penalty: float) -> list[Sample]:
    """Add :func:`soft_overlong_penalty` of each response length to ``sample.reward`` (recorded as
    ``reward_breakdown["overlong_penalty"]``). Use this or the weighted "overlong" reward, not both."""
    out = []
    for s in samples:
        p = soft_overlong_penalty(len(s.response_ids), max_len, buffer, penalty)
        out.append(s.replace(reward=s.reward + p, reward_breakdown={**s.reward_breakdown, "overlong_penalty": p}))
    return out
