"""What every reward function returns."""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class RewardResult(NamedTuple):
    """A reward's unweighted ``score`` and plain-data ``info`` (e.g. the extracted answer) for logs."""

    score: float
    info: dict[str, Any]


# fn(response_text, reference_answer, metadata, cfg) -> RewardResult. ``metadata`` is the sample's
# metadata plus "response_len" (response tokens) and "finish_reason"; ``cfg`` is the RewardConfig.
RewardFn = Callable[[str, "str | None", dict, Any], RewardResult]
