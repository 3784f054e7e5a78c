"""The typed record that flows through one RL step.

A :class:`Sample` is one response to one prompt. The rollout engine creates it (token ids,
rollout logprobs, finish reason, policy version), the reward scorer fills ``reward`` and
``reward_breakdown``, the advantage estimator fills ``advantage``, and the trainer packs
samples into micro-batches. Pure Python: no torch, so every stage and its tests can use it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(kw_only=True)
class Sample:
    """One sampled response and everything the step learns about it."""

    prompt_ids: list[int]
    """Token ids of the prompt, as fed to the rollout engine."""
    response_ids: list[int]
    """Generated token ids (stop token included when the engine emitted one)."""
    group_id: int
    """Index of the prompt within the step's batch: the G samples of one prompt share it."""
    rollout_logprobs: list[float] | None = None
    """Per-token log-probabilities of ``response_ids`` under the rollout engine."""
    finish_reason: FinishReason = "stop"
    """``stop``: the model ended (stop token/string); ``length``: cut at max new tokens."""
    policy_version: int = 0
    """Version of the policy weights the engine generated with."""
    prompt_text: str = ""
    response_text: str = ""
    answer: str | None = None
    """Reference answer used by rule rewards (None for general prompts)."""
    kind: str = "reasoning"
    """Which reward family scores it: ``reasoning`` (rule rewards) or ``general`` (reward model)."""
    reward: float = 0.0
    reward_breakdown: dict[str, float] = field(default_factory=dict)
    """Each reward function's score (unweighted) and any error flags, kept for metrics."""
    advantage: float = 0.0
    loss_mask: bool = True
    """False drops the sample from the policy loss (e.g. overlong filtering)."""
    response_mask: list[int] | None = None
    """Per-token loss mask over ``response_ids`` (multi-turn SFT: 0 on user/tool turns inside the
    response); None means every response token carries loss."""
    metadata: dict[str, Any] = field(default_factory=dict)
    token_versions: list[int] | None = None
    """The policy version that generated each response token, where they differ (a partial rollout
    continued under newer weights, r1mega.rollout.partial); None: all ``policy_version``."""
    routed_experts: Any = None
    """MoE models, when the engine records routing (R3): a (P + R, L_moe, k) uint8/int16 torch tensor,
    the experts each token of ``prompt_ids + response_ids`` went to in each MoE layer; see
    r1mega.rollout.routing_capture for the encoding. None: not recorded."""

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    def replace(self, **changes: Any) -> "Sample":
        return dataclasses.replace(self, **changes)
