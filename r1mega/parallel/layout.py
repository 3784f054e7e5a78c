"""The one place where the parallel layout is decided and checked.

Given the parallel config, the world size and the model architecture, :func:`check_layout`
either returns the :class:`Layout` every rank will use (all sizes resolved, vocab padding
chosen) or raises a :class:`ConfigError` naming both values of the broken constraint.
Pure Python: `r1mega plan` and config validation use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from r1mega.config.base import ConfigError
from r1mega.config.sections import ParallelConfig


@dataclass(frozen=True, kw_only=True)
class Layout:
    world_size: int
    tensor: int
    pipeline: int
    virtual_pipeline: int | None
    context: int
    data: int
    expert: int
    expert_tensor: int
    sequence_parallel: bool
    rollout_tensor: int
    rollout_data: int
    padded_vocab_size: int

    def describe(self) -> str:
        vp = f" (x{self.virtual_pipeline} virtual)" if self.virtual_pipeline else ""
        return (f"world {self.world_size} = TP {self.tensor} x PP {self.pipeline}{vp} x CP {self.context} "
                f"x DP {self.data}; EP {self.expert} (expert TP {self.expert_tensor}); "
                f"rollout: {self.rollout_data} engine(s) x TP {self.rollout_tensor}; "
                f"vocab padded to {self.padded_vocab_size}")


def padded_vocab(vocab_size: int, tensor: int) -> int:
    """Smallest multiple of ``tensor`` >= vocab_size: every TP rank gets an equal vocab shard.

    Padding rows are never scored: the trainer drops them before the softmax, so logits and
    logprobs over the real vocabulary equal the unpadded model's.
    """
    return -(-vocab_size // tensor) * tensor


def check_layout(p: ParallelConfig, world_size: int, arch=None, num_experts: int | None = None) -> Layout:
    """Validate ``p`` against the world size and (when given) the model; return the layout."""
    p.validate()
    if world_size < 1:
        raise ConfigError(f"world size ({world_size}) must be >= 1")
    mp = p.tensor * p.pipeline * p.context
    if world_size % mp:
        raise ConfigError(
            f"world size ({world_size}) must be a multiple of parallel.tensor x parallel.pipeline x "
            f"parallel.context ({p.tensor} x {p.pipeline} x {p.context} = {mp})")
    data = world_size // mp
    etp = p.expert_tensor or p.tensor
    if (world_size // p.pipeline) % (p.expert * etp):
        raise ConfigError(
            f"parallel.expert ({p.expert}) x expert tensor ({etp}) must divide world size / pipeline "
            f"({world_size} / {p.pipeline} = {world_size // p.pipeline})")
    if world_size % p.rollout_tensor:
        raise ConfigError(f"parallel.rollout_tensor ({p.rollout_tensor}) must divide the world size ({world_size})")
    vocab = 0
    if arch is not None:
        if arch.num_heads % p.tensor:
            raise ConfigError(f"num_attention_heads ({arch.num_heads}) must be a multiple of parallel.tensor ({p.tensor})")
        if arch.num_kv_heads % p.tensor:
            raise ConfigError(
                f"num_key_value_heads ({arch.num_kv_heads}) must be a multiple of parallel.tensor ({p.tensor})")
        if arch.num_heads % p.rollout_tensor or (
                arch.num_kv_heads % p.rollout_tensor and p.rollout_tensor % arch.num_kv_heads):
            raise ConfigError(
                f"parallel.rollout_tensor ({p.rollout_tensor}) must divide num_attention_heads ({arch.num_heads}) "
                f"and divide or be a multiple of num_key_value_heads ({arch.num_kv_heads})")
        chunks = p.pipeline * (p.virtual_pipeline or 1)
        if arch.num_layers % chunks:
            what = "parallel.pipeline" if not p.virtual_pipeline else "parallel.pipeline x parallel.virtual_pipeline"
            raise ConfigError(f"num_hidden_layers ({arch.num_layers}) must be a multiple of {what} ({chunks})")
        experts = num_experts if num_experts is not None else getattr(arch, "num_experts", 0)
        if experts and experts % p.expert:
            raise ConfigError(f"num_experts ({experts}) must be a multiple of parallel.expert ({p.expert})")
        if not experts and p.expert > 1:
            raise ConfigError(f"parallel.expert ({p.expert}) > 1 needs an MoE model (this model has no experts)")
        if experts and getattr(arch, "is_moe", False):
            from r1mega.models.moe import check_moe_layout
            check_moe_layout(arch, p, etp)
        vocab = padded_vocab(arch.vocab_size, p.tensor)
    return Layout(world_size=world_size, tensor=p.tensor, pipeline=p.pipeline, virtual_pipeline=p.virtual_pipeline,
                  context=p.context, data=data, expert=p.expert, expert_tensor=etp,
                  sequence_parallel=p.sequence_parallel, rollout_tensor=p.rollout_tensor,
                  rollout_data=world_size // p.rollout_tensor, padded_vocab_size=vocab)
