"""Length shaping: a linear length penalty/bonus and DAPO's soft overlong punishment."""

from __future__ import annotations

from r1mega.rewards.result import RewardResult


def soft_overlong_penalty(length: int, max_len: int, buffer: int, penalty: float = 1.0) -> float:
    """DAPO soft overlong punishment (arXiv 2503.14476, eq. 13), scaled by ``penalty``:

        R(L) = 0                                   if L <= max_len - buffer
             = penalty * ((max_len - buffer) - L) / buffer    if max_len - buffer < L <= max_len
             = -penalty                            if L > max_len

    so the penalty ramps linearly from 0 to -penalty over the last ``buffer`` tokens.
    ``buffer = 0`` gives a hard step at max_len.
    """
    if max_len < 1 or buffer < 0 or buffer > max_len:
        raise ValueError(f"soft_overlong_penalty needs 0 <= buffer ({buffer}) <= max_len ({max_len}), max_len >= 1")
    start = max_len - buffer
    if length <= start:
        return 0.0
    if length > max_len:
        return -float(penalty)
    return float(penalty) * (start - length) / buffer


def linear_length_score(length: int, target: int, bonus: bool = False) -> float:
    """Length penalty (and optional bonus) relative to a target length, in [-1, 1]:

        s = clip((target - L) / target, -1, 1)       with bonus
        s = min(0, clip((target - L) / target, -1))   without bonus (penalty only above target)

    A simple per-sample variant of the length rewards of the R1 reproduction literature
    (e.g. Kimi k1.5, arXiv 2501.12599, which rewards shorter correct responses).
    """
    if target < 1:
        raise ValueError(f"length target ({target}) must be >= 1")
    s = max(-1.0, min(1.0, (target - length) / target))
    return s if bonus else min(0.0, s)


def _response_len(response: str, meta: dict) -> tuple[int, str]:
    if "response_len" in meta:
        return int(meta["response_len"]), "tokens"
    return len(response.split()), "words"  # called outside the scorer, without token counts


def length_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """:func:`linear_length_score` of the response length (tokens) against ``cfg.length_target``."""
    n, unit = _response_len(response, meta)
    return RewardResult(linear_length_score(n, cfg.length_target, cfg.length_bonus), {"length": n, "unit": unit})


def overlong_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """DAPO soft overlong punishment in [-1, 0] (its weight is the penalty factor), from the response
    length in tokens, ``cfg.max_response_len`` and ``cfg.overlong_buffer``."""
    n, unit = _response_len(response, meta)
    return RewardResult(soft_overlong_penalty(n, cfg.max_response_len, cfg.overlong_buffer, 1.0),
                        {"length": n, "unit": unit})
