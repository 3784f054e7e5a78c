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
    first_stage_layers: int | None = None  # uneven pipeline split (None: even); see stage_layers
    last_stage_layers: int | None = None

    def describe(self) -> str:
        vp = f" (x{self.virtual_pipeline} virtual)" if self.virtual_pipeline else ""
        if self.first_stage_layers is not None or self.last_stage_layers is not None:
            vp += f" [layers: first stage {self.first_stage_layers or 'even'}, last {self.last_stage_layers or 'even'}]"
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


def stage_layers(num_layers: int, pipeline: int, virtual: int | None = None, first: int | None = None,
                 last: int | None = None) -> list[list[list[int]]]:
    """Global layer indices of each pipeline rank's model chunks: ``[rank][chunk] -> [layers]``.

    Megatron's split: with ``first`` / ``last`` set, those stages hold that many layers and the rest
    are spread evenly over the middle stages; with ``virtual`` = v chunks per rank, each stage's
    layers are cut into v equal chunks and the layers run chunk 0 of every stage (rank 0 first),
    then chunk 1 of every stage, and so on. Raises ConfigError naming the numbers that do not split.
    """
    v = virtual or 1
    counts = [None] * pipeline
    rest, free = num_layers, pipeline
    if first is not None:
        counts[0], rest, free = first, rest - first, free - 1
    if last is not None:
        counts[-1], rest, free = last, rest - last, free - 1
    if first is not None and last is not None and pipeline == 1:
        raise ConfigError("parallel.first_stage_layers and parallel.last_stage_layers need parallel.pipeline >= 2")
    if free:
        if rest <= 0 or rest % free:
            what = "num_hidden_layers" + (" minus the first/last-stage layers" if free < pipeline else "")
            raise ConfigError(f"{what} ({rest}) must split evenly over {free} pipeline stage(s) "
                              f"(parallel.pipeline={pipeline}); set parallel.first_stage_layers / "
                              f"parallel.last_stage_layers so that it does")
        counts = [c if c is not None else rest // free for c in counts]
    elif rest:
        raise ConfigError(f"parallel.first_stage_layers + parallel.last_stage_layers ({num_layers - rest}) must "
                          f"equal num_hidden_layers ({num_layers}) with parallel.pipeline=2")
    for rank, c in enumerate(counts):
        if c % v:
            raise ConfigError(f"pipeline stage {rank} holds {c} layers, not a multiple of "
                              f"parallel.virtual_pipeline ({v})")
    out = [[[] for _ in range(v)] for _ in range(pipeline)]
    nxt = 0
    for k in range(v):
        for rank in range(pipeline):
            per = counts[rank] // v
            out[rank][k] = list(range(nxt, nxt + per))
            nxt += per
    return out


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
    # colocated engines span the world; async ones span the rollout ranks (r1mega.config checks those)
    rollout_world = p.rollout_ranks or world_size
    if rollout_world % p.rollout_tensor:
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
        if p.first_stage_layers is None and p.last_stage_layers is None:
            chunks = p.pipeline * (p.virtual_pipeline or 1)
            if arch.num_layers % chunks:
                what = "parallel.pipeline" if not p.virtual_pipeline else "parallel.pipeline x parallel.virtual_pipeline"
                raise ConfigError(f"num_hidden_layers ({arch.num_layers}) must be a multiple of {what} ({chunks}), "
                                  f"or set parallel.first_stage_layers / parallel.last_stage_layers")
        stage_layers(arch.num_layers, p.pipeline, p.virtual_pipeline, p.first_stage_layers, p.last_stage_layers)
        experts = num_experts if num_experts is not None else getattr(arch, "num_experts", 0)
        if experts and experts % p.expert:
            raise ConfigError(f"num_experts ({experts}) must be a multiple of parallel.expert ({p.expert})")
        if not experts and p.expert > 1:
            raise ConfigError(f"parallel.expert ({p.expert}) > 1 needs an MoE model (this model has no experts)")
        if experts and getattr(arch, "is_moe", False):
            check_moe_layout(arch, p, etp)
        vocab = padded_vocab(arch.vocab_size, p.tensor)
    return Layout(world_size=world_size, tensor=p.tensor, pipeline=p.pipeline, virtual_pipeline=p.virtual_pipeline,
                  context=p.context, data=data, expert=p.expert, expert_tensor=etp,
                  sequence_parallel=p.sequence_parallel, rollout_tensor=p.rollout_tensor,
                  rollout_data=rollout_world // p.rollout_tensor, padded_vocab_size=vocab,
                  first_stage_layers=p.first_stage_layers, last_stage_layers=p.last_stage_layers)


def check_moe_layout(arch, p: ParallelConfig, etp: int) -> None:
    """MoE constraints of a parallel layout (``etp``: expert TP size)."""
    if arch.moe_ffn_hidden_size % etp:
        raise ConfigError(f"moe_intermediate_size ({arch.moe_ffn_hidden_size}) must be a multiple of the expert "
                          f"tensor-parallel size ({etp})")
    if arch.moe_shared_ffn_hidden_size % p.tensor:
        raise ConfigError(f"the shared expert's intermediate size ({arch.moe_shared_ffn_hidden_size}) must be a "
                          f"multiple of parallel.tensor ({p.tensor})")
    if p.tensor > 1 and not p.sequence_parallel:
        # Megatron's MoELayer.forward raises in training mode ("performance may degrade if MoE
        # and tensor parallelism are enabled without also enabling sequence parallelism"):
        # without SP every TP rank would route and dispatch the same tokens.
        raise ConfigError(f"an MoE model with parallel.tensor ({p.tensor}) > 1 needs parallel.sequence_parallel="
                          f"true (Megatron's MoE layer refuses to train TP without SP: every TP rank would "
                          f"dispatch the same tokens)")
