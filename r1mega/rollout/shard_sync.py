"""Direct weight sync: each rank's own Megatron TP shard -> its own vLLM TP shard, in place.

When it applies
---------------
The trainer's tensor-parallel group *is* the rollout engine's: the same global ranks in the
same order (Megatron TP rank == vLLM TP rank on every rank), pipeline size 1 on both sides
(with PP > 1 a trainer stage holds only its layers, while the engine on that rank needs all of
them: those layouts keep the gather path), one model chunk (no virtual pipeline), a dense
unquantized model whose every vLLM parameter has a Megatron source. Then rank r already holds
exactly the rows/columns its vLLM shard needs, up to a local reorder, and the sync needs no
all-gather and never builds a full tensor. :func:`sync_policy` checks this on every rank,
agrees on it (one scalar all-reduce), and otherwise falls back to the gather path of
:mod:`r1mega.rollout.weight_sync` (``mode="auto"``) or raises :class:`DirectSyncError`
(``mode="direct"``).

Layouts (TP size t, rank r; G query groups, Q heads, D head dim, H hidden, I ffn, V vocab;
per rank G_r = G/t, Q_r = Q/t, I_r = I/t)::

    linear_qkv   Megatron [for each local group g: q_g (Q/G heads), k_g, v_g]   (G_r*(Q/G+2)*D, H)
                 -> qkv_proj [q (Q_r*D); k (G_r*D); v (G_r*D)]        local row reorder, same shape
    linear_fc1   [gate_r; up_r] (2*I_r, H) -> gate_up_proj [gate_r; up_r]         identical
    linear_proj, linear_fc2: columns [r*n/t, (r+1)*n/t) -> o_proj, down_proj       identical
    norms (input/post-attention/final, q/k norm): replicated                        identical
    word embeddings / output layer: vocab rows, see below

The reorder reuses :func:`r1mega.models.hf_io.to_hf` on the single local shard with a per-rank
architecture (G_r groups, Q_r heads): the grouped-QKV layout of one rank's shard is the global
layout of a model with G_r groups, so no layout rule is written twice.

Vocabulary shards
-----------------
Megatron pads V to a multiple of t (:func:`r1mega.parallel.layout.padded_vocab`): rank r holds
rows [r*Pm, (r+1)*Pm), Pm = ceil(V/t). vLLM pads V to a multiple of 64 first
(``vocab_parallel_embedding.pad_vocab_size``): rank r holds rows [r*Pv, (r+1)*Pv) with
Pv = pad64(V)/t, real rows first, the padding rows beyond V zero. Since pad64(V) is a multiple
of t that is >= V, Pv >= Pm, and vLLM's rank r starts r*(Pv - Pm) < 64 rows after Megatron's:
each rank keeps most of its rows and receives fewer than 64 from the next rank(s). Those rows
move point to point (``isend``/``irecv`` in the TP group; the shard boundaries are computed
from vLLM's own ``_get_indices`` rule for every rank, no metadata exchange). Gathering the
whole table instead would move V*H per rank (2.5 GB for a 152k x 8192 bf16 table) to fix a
shift of a few rows. When V is a multiple of 64 (Qwen2.5, Llama 3), the boundaries coincide
and nothing moves.

How the tensors reach vLLM
--------------------------
Per vLLM module, after all of its parameters are written: the module's
``quant_method.process_weights_after_loading`` runs again, for it and for every module that
shares one of its parameters (the tied ``lm_head``: what
:func:`r1mega.rollout.weight_sync.refresh_shared_modules` does after a gather sync). On GPU the
unquantized parameters *are* the kernel tensors: the shard is copied into them in place
(addresses kept, CUDA graphs stay valid) and the processing is a no-op. On CPU vLLM repacks
linear weights for oneDNN/SGL and leaves an empty placeholder parameter behind; there is no
checkpoint-layout tensor to copy into, so the shard is materialised as that module's fresh
parameter (one module at a time) and the processing repacks it, exactly as vLLM's own reload
does. Peak extra memory: one module parameter's shard (plus < 64 vocab rows in flight).

Contract: the same as :meth:`r1mega.rollout.weight_sync.WeightSync.push` (every rank calls it
at the same time; afterwards the engine holds exactly the trainer's weights, prefix cache
reset, policy version N; on failure the engine's weights are undefined and it refuses to
generate). The vLLM engine must run in this process (``RolloutEngine`` forces it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import torch

from r1mega.rollout.weight_sync import SyncStats, tensor_bytes

log = logging.getLogger("r1mega.rollout")

MODES = ("auto", "gather", "direct")
_KINDS = ("copy", "qkv", "gate_up", "vocab")
_FALLBACKS_LOGGED: set[str] = set()
_FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "gate_up": ("gate_proj", "up_proj")}


class DirectSyncError(RuntimeError):
    """``mode="direct"`` was asked for a layout or model the direct path cannot serve."""


# --------------------------------------------------------------------------- vocab rows
@dataclass(frozen=True)
class RowMove:
    """Global vocab rows [start, stop) held by trainer TP rank ``src``, needed by engine rank ``dst``."""

    src: int
    dst: int
    start: int
    stop: int


def vocab_moves(vocab_size: int, trainer_rows: int, engine_ranges: list[tuple[int, int]]) -> list[RowMove]:
    """Which real vocab rows go from which trainer TP rank to which engine TP rank.

    ``trainer_rows``: rows per trainer shard (Megatron: rank s holds [s*Pm, (s+1)*Pm)).
    ``engine_ranges[r]``: the real rows [start, stop) engine rank r holds (vLLM's
    ``org_vocab_start_index``/``org_vocab_end_index``). Returns one move per non-empty overlap,
    ``src == dst`` for the rows a rank keeps. Rows >= ``vocab_size`` (padding) never move.
    """
    t = len(engine_ranges)
    if trainer_rows * t < vocab_size:
        raise ValueError(f"{t} trainer vocab shards of {trainer_rows} rows cannot hold vocab_size ({vocab_size})")
    moves = []
    for dst, (start, stop) in enumerate(engine_ranges):
        if not 0 <= start <= stop <= vocab_size:
            raise ValueError(f"engine rank {dst}: vocab rows [{start}, {stop}) outside [0, {vocab_size})")
        for src in range(t):
            lo, hi = max(start, src * trainer_rows), min(stop, (src + 1) * trainer_rows)
            if lo < hi:
                moves.append(RowMove(src, dst, lo, hi))
    covered = sum(m.stop - m.start for m in moves)
    if covered != sum(b - a for a, b in engine_ranges):
        raise AssertionError("vocab moves do not cover the engine's rows")  # cannot happen: ranges are disjoint
    return moves


# --------------------------------------------------------------------------- layouts
@dataclass
class TrainerLayout:
    """This rank's place in the trainer (Megatron) model-parallel layout."""

    tp_size: int
    tp_rank: int
    tp_ranks: list[int]          # global ranks of this rank's TP group, in TP-rank order
    pp_size: int
    num_chunks: int


@dataclass
class EngineLayout:
    """This rank's place in the vLLM engine's layout (read from vLLM's own groups)."""

    tp_size: int
    tp_rank: int
    tp_ranks: list[int]
    pp_size: int
    quantized: bool
    lora: bool


def trainer_layout(chunks: list[torch.nn.Module]) -> TrainerLayout:
    from megatron.core import parallel_state as ps

    dist = torch.distributed
    group = ps.get_tensor_model_parallel_group()
    ranks = dist.get_process_group_ranks(group) if dist.is_initialized() else [0]
    return TrainerLayout(tp_size=ps.get_tensor_model_parallel_world_size(),
                         tp_rank=ps.get_tensor_model_parallel_rank(), tp_ranks=list(ranks),
                         pp_size=ps.get_pipeline_model_parallel_world_size(), num_chunks=len(chunks))


def _engine_view(worker) -> tuple[torch.nn.Module, EngineLayout]:
    """Worker-side (``llm.collective_rpc``): the model and the engine's layout."""
    from vllm.distributed.parallel_state import get_pp_group, get_tp_group

    tp, pp = get_tp_group(), get_pp_group()
    cfg = worker.vllm_config
    layout = EngineLayout(tp_size=tp.world_size, tp_rank=tp.rank_in_group, tp_ranks=list(tp.ranks),
                          pp_size=pp.world_size, quantized=cfg.quant_config is not None,
                          lora=cfg.lora_config is not None)
    return worker.model_runner.get_model(), layout


def layout_mismatch(trainer: TrainerLayout, engine: EngineLayout) -> str | None:
    """Why the direct path cannot serve these layouts (None: it can)."""
    if trainer.pp_size > 1:
        return (f"trainer pipeline parallel size ({trainer.pp_size}) > 1: a stage holds only its own "
                "layers but the engine on its rank needs all of them; PP > 1 uses the gather path")
    if trainer.num_chunks != 1:
        return f"trainer has {trainer.num_chunks} model chunks (virtual pipeline); the direct path needs 1"
    if engine.pp_size > 1:
        return f"rollout engine pipeline parallel size ({engine.pp_size}) > 1"
    if trainer.tp_size != engine.tp_size:
        return (f"trainer tensor parallel size (parallel.tensor={trainer.tp_size}) != rollout tensor "
                f"parallel size (parallel.rollout_tensor={engine.tp_size})")
    if trainer.tp_ranks != engine.tp_ranks or trainer.tp_rank != engine.tp_rank:
        return (f"trainer TP group ranks {trainer.tp_ranks} (this rank {trainer.tp_rank}) are not the "
                f"rollout engine's TP ranks {engine.tp_ranks} (this rank {engine.tp_rank})")
    if engine.quantized:
        return "the rollout engine is quantized (its kernel layout is not the checkpoint layout)"
    if engine.lora:
        return "the rollout engine has LoRA enabled"
    return None


# --------------------------------------------------------------------------- the plan
@dataclass
class Target:
    """One trainer parameter and the vLLM parameter it becomes on this rank."""

    key: str                       # global Megatron name
    kind: str                      # copy | qkv | gate_up | vocab
    source: torch.Tensor           # this rank's Megatron shard (detached)
    module_name: str               # vLLM module path
    param_name: str                # "weight" | "bias"
    shape: tuple[int, ...]         # the vLLM parameter's checkpoint-layout (unpacked) shape
    moves: list[RowMove] = field(default_factory=list)  # vocab only: rows crossing ranks
    row_start: int = 0             # vocab only: first global row of this rank's vLLM shard


@dataclass
class Plan:
    model: torch.nn.Module
    trainer: TrainerLayout
    local_arch: object             # per-rank architecture: G_r query groups, Q_r heads
    targets: list[Target]

    def modules(self) -> dict[str, list[Target]]:
        """Targets grouped by vLLM module, in trainer order."""
        groups: dict[str, list[Target]] = {}
        for t in self.targets:
            groups.setdefault(t.module_name, []).append(t)
        return groups


def _vllm_name(kind: str, hf_names: tuple[str, ...], packed: dict) -> tuple[str, str]:
    """(module path, parameter name) of the vLLM parameter holding these HF tensors."""
    module, _, param = hf_names[0].rpartition(".")
    if kind in _FUSED:
        parent, _, leaf = module.rpartition(".")
        want = _FUSED[kind]
        fused = [name for name, parts in packed.items() if tuple(parts) == want]
        if leaf != want[0] or len(fused) != 1:
            raise LookupError(f"the vLLM model does not fuse {list(want)} into one module "
                              f"(packed_modules_mapping: {packed})")
        module = f"{parent}.{fused[0]}"
    return module, param


def _checkpoint_shape(module: torch.nn.Module, name: str, live: torch.Tensor) -> tuple[int, ...]:
    """Unpacked shape of ``module.<name>``; CPU linear layers keep only an empty placeholder."""
    from vllm.model_executor.layers.linear import LinearBase

    if isinstance(module, LinearBase) and name == "weight":
        return (sum(module.output_partition_sizes), module.input_size_per_partition)
    if isinstance(module, LinearBase) and name == "bias":
        return (sum(module.output_partition_sizes),)
    return tuple(live.shape)


def _check_target(t: Target, module: torch.nn.Module, arch, local, tp: int, split: bool, dim: int) -> None:
    """Raise ValueError when vLLM's module is not the shard the trainer parameter maps to."""
    from vllm.model_executor.layers.linear import (ColumnParallelLinear, LinearBase, MergedColumnParallelLinear,
                                                   QKVParallelLinear, RowParallelLinear,
                                                   UnquantizedLinearMethod)
    from vllm.model_executor.layers.vocab_parallel_embedding import (UnquantizedEmbeddingMethod,
                                                                     VocabParallelEmbedding)

    where = f"{t.key} -> {t.module_name}.{t.param_name}"
    method = getattr(module, "quant_method", None)
    if method is not None and not isinstance(method, (UnquantizedLinearMethod, UnquantizedEmbeddingMethod)):
        raise ValueError(f"{where}: quant method {type(method).__name__} (only unquantized layers load directly)")
    if isinstance(module, LinearBase) and getattr(module, "tp_size", 1) != (tp if split else 1):
        raise ValueError(f"{where}: vLLM shards it over {module.tp_size} rank(s), the trainer over "
                         f"{tp if split else 1}")
    if t.kind == "qkv":
        if not isinstance(module, QKVParallelLinear):
            raise ValueError(f"{where}: expected a QKVParallelLinear, got {type(module).__name__}")
        if (module.num_kv_head_replicas != 1 or module.num_heads != local.num_heads
                or module.num_kv_heads != local.num_kv_heads or module.head_size != arch.head_dim
                or module.v_head_size != arch.head_dim):
            raise ValueError(f"{where}: vLLM shard has {module.num_heads} q / {module.num_kv_heads} kv heads "
                             f"(x{module.num_kv_head_replicas} replicas) of {module.head_size}, the trainer "
                             f"{local.num_heads} / {local.num_kv_heads} of {arch.head_dim}")
    elif t.kind == "gate_up":
        rows = t.source.shape[0] // 2
        if not isinstance(module, MergedColumnParallelLinear) or list(module.output_partition_sizes) != [rows, rows]:
            raise ValueError(f"{where}: expected a MergedColumnParallelLinear [gate; up] of {rows} rows each")
    elif t.kind == "vocab":
        if not isinstance(module, VocabParallelEmbedding):
            raise ValueError(f"{where}: expected a VocabParallelEmbedding, got {type(module).__name__}")
        if module.num_added_embeddings or module.org_vocab_size != arch.vocab_size or module.tp_size != tp:
            raise ValueError(f"{where}: vLLM vocab {module.org_vocab_size} (+{module.num_added_embeddings} added) "
                             f"over {module.tp_size} ranks; the trainer's {arch.vocab_size} over {tp}")
        if t.shape[1:] != tuple(t.source.shape[1:]):
            raise ValueError(f"{where}: row size {t.shape[1:]} != trainer's {tuple(t.source.shape[1:])}")
        return
    elif split:  # row-/column-parallel copies: the split dimension must agree
        want = RowParallelLinear if dim == 1 else ColumnParallelLinear
        if not isinstance(module, want):
            raise ValueError(f"{where}: the trainer splits dim {dim}, vLLM's {type(module).__name__} does not")
    if t.shape != tuple(t.source.shape):
        raise ValueError(f"{where}: vLLM shard shape {t.shape} != trainer shard shape {tuple(t.source.shape)}")


def plan_direct(engine, chunks: list[torch.nn.Module], arch) -> tuple[Plan | None, str | None]:
    """(plan, None) when the direct path can serve this rank, else (None, reason). Local only."""
    from r1mega.models.hf_io import named_global_params

    model, elayout = engine.llm.collective_rpc(_engine_view)[0]
    tlayout = trainer_layout(chunks)
    reason = layout_mismatch(tlayout, elayout)
    if reason:
        return None, reason
    tp = tlayout.tp_size
    local = dataclasses.replace(arch, num_heads=arch.num_heads // tp, num_kv_heads=arch.num_kv_heads // tp)
    packed = getattr(type(model), "packed_modules_mapping", {}) or {}
    owned = {id(p): n for n, p in model.named_parameters()}
    targets, written = [], {}
    try:
        for ref, p in named_global_params(chunks):
            if ref.kind not in _KINDS:
                raise ValueError(f"{ref.key}: no direct layout for parameter kind {ref.kind!r}")
            if getattr(ref, "expert", None) is not None:  # EP/expert-TP shards vs vLLM's FusedMoE layout
                raise ValueError(f"{ref.key}: routed-expert (MoE) weights have no direct layout; "
                                 "MoE models use the gather path")
            module_name, param_name = _vllm_name(ref.kind, ref.hf_names, packed)
            module = model.get_submodule(module_name)
            live = module._parameters.get(param_name)
            if live is None:
                raise ValueError(f"{ref.key}: vLLM module {module_name} has no parameter {param_name!r}")
            if id(live) in written:
                raise ValueError(f"{ref.key} and {written[id(live)]} both map to {module_name}.{param_name}")
            written[id(live)] = ref.key
            split = bool(getattr(p, "tensor_model_parallel", False)) and tp > 1
            t = Target(ref.key, ref.kind, p.detach(), module_name, param_name,
                       _checkpoint_shape(module, param_name, live))
            _check_target(t, module, arch, local, tp, split, getattr(p, "partition_dim", 0))
            if ref.kind == "vocab":
                t.moves = _module_vocab_moves(module, t.source.shape[0], tp)
                t.row_start = module.shard_indices.org_vocab_start_index
            targets.append(t)
    except (ValueError, LookupError, AttributeError) as e:
        return None, str(e)
    missing = sorted(n for i, n in owned.items() if i not in written)
    if missing:
        return None, f"{len(missing)} vLLM parameter(s) have no trainer source, e.g. {missing[:4]}"
    return Plan(model, tlayout, local, targets), None


def _module_vocab_moves(module, trainer_rows: int, tp: int) -> list[RowMove]:
    """Row moves for a vLLM vocab-parallel module: every rank's range from vLLM's own rule."""
    ranges = []
    for r in range(tp):
        idx = type(module)._get_indices(module.num_embeddings_padded, module.org_vocab_size_padded,
                                        module.num_embeddings, module.org_vocab_size, r, tp)
        ranges.append((idx.org_vocab_start_index, idx.org_vocab_end_index))
    mine = module.shard_indices
    if ranges[module.tp_rank] != (mine.org_vocab_start_index, mine.org_vocab_end_index):
        raise ValueError(f"{module.__class__.__name__}: recomputed vocab range {ranges[module.tp_rank]} != "
                         f"the module's ({mine.org_vocab_start_index}, {mine.org_vocab_end_index})")
    return vocab_moves(module.org_vocab_size, trainer_rows, ranges)


# --------------------------------------------------------------------------- loading
class DirectLoader:
    """Writes a :class:`Plan` into the vLLM model (call it worker-side via ``collective_rpc``)."""

    def __init__(self, plan: Plan, stats: SyncStats):
        self.plan, self.stats = plan, stats

    def __call__(self, worker) -> None:
        from r1mega.models.hf_io import to_hf

        model = self.plan.model
        owners: dict[int, list[torch.nn.Module]] = {}
        for m in model.modules():
            for p in m.parameters(recurse=False):
                owners.setdefault(id(p), []).append(m)
        for module_name, targets in self.plan.modules().items():
            module = model.get_submodule(module_name)
            to_process = [module]
            for t in targets:
                live = module._parameters[t.param_name]
                to_process += [m for m in owners.get(id(live), []) if m is not module and m not in to_process]
                if t.kind == "vocab":
                    self._write(module, t, live, None)
                else:  # the local shard in vLLM's order: [q; k; v], [gate; up] or as is
                    parts = to_hf(_as_ref(t), [t.source], 0, self.plan.local_arch)
                    self._write(module, t, live, parts)
                    del parts
            for m in to_process:
                _process(m)

    def _write(self, module, t: Target, live: torch.Tensor, parts: list[torch.Tensor] | None) -> None:
        in_place = tuple(live.shape) == t.shape and not live.is_meta
        dtype = live.dtype if in_place else module.params_dtype
        dst = live.data if in_place else torch.empty(t.shape, dtype=dtype, device=live.device)
        if parts is None:
            self._write_vocab(dst, t)
        else:
            row = 0
            for part in parts:  # (rows, ...) slices of the vLLM shard, in order
                dst[row:row + part.shape[0]].copy_(part)
                row += part.shape[0]
            if row != t.shape[0]:
                raise RuntimeError(f"{t.key}: wrote {row} rows into {t.module_name}.{t.param_name} of {t.shape[0]}")
            self.stats.peak_bucket_bytes = max(self.stats.peak_bucket_bytes, sum(map(tensor_bytes, parts)))
        if not in_place:  # CPU: packed weight left an empty placeholder; vLLM repacks the fresh one
            module.register_parameter(t.param_name, torch.nn.Parameter(dst, requires_grad=False))
        self.stats.num_tensors += 1
        self.stats.total_bytes += tensor_bytes(dst)
        self.stats.max_tensor_bytes = max(self.stats.max_tensor_bytes, tensor_bytes(dst))

    def _write_vocab(self, dst: torch.Tensor, t: Target) -> None:
        """Rows this rank keeps are copied; rows across a shard boundary go point to point."""
        dist = torch.distributed
        me, ranks = self.plan.trainer.tp_rank, self.plan.trainer.tp_ranks
        start, rows = t.row_start, t.source.shape[0]
        pending, received = [], []
        for m in t.moves:
            if m.src == me:
                block = t.source[m.start - me * rows:m.stop - me * rows]  # (n, H) contiguous rows
                if m.dst == me:
                    dst[m.start - start:m.stop - start].copy_(block)
                else:
                    pending.append(dist.isend(block.contiguous(), dst=ranks[m.dst]))
                    self.stats.exchanged_bytes += tensor_bytes(block)
            elif m.dst == me:
                buf = torch.empty((m.stop - m.start, *t.source.shape[1:]), dtype=t.source.dtype,
                                  device=t.source.device)
                pending.append(dist.irecv(buf, src=ranks[m.src]))
                received.append((m, buf))
                self.stats.exchanged_bytes += tensor_bytes(buf)
        for work in pending:
            work.wait()
        for m, buf in received:
            dst[m.start - start:m.stop - start].copy_(buf)
        self.stats.peak_bucket_bytes = max(self.stats.peak_bucket_bytes, sum(tensor_bytes(b) for _, b in received))
        real = sum(m.stop - m.start for m in t.moves if m.dst == me)
        dst[real:].zero_()  # vLLM's padding rows (its weight_loader zero-fills them too)


def _as_ref(t: Target):
    from r1mega.models.hf_io import ParamRef
    return ParamRef(t.key, t.kind, ())


def _process(module: torch.nn.Module) -> None:
    """What vLLM runs after loading a module (repacking on CPU; a no-op for unquantized on GPU)."""
    method = getattr(module, "quant_method", None)
    if method is not None and hasattr(method, "process_weights_after_loading"):
        method.process_weights_after_loading(module)
        if hasattr(module, "update_param_tp_status"):
            module.update_param_tp_status()


def _agree(ok: bool) -> bool:
    """True on every rank iff ``ok`` on every rank (all ranks must take the same path)."""
    dist = torch.distributed
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return ok
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def push_direct(engine, plan: Plan, version: int) -> SyncStats:
    """Write ``plan`` into the engine's model (collective over the TP group: vocab rows)."""
    stats = SyncStats(version=version, path="direct")
    start = time.perf_counter()
    with torch.no_grad():
        engine.llm.collective_rpc(DirectLoader(plan, stats))
    stats.seconds = time.perf_counter() - start
    return stats


def sync_policy(engine, chunks: list[torch.nn.Module], arch, version: int, bucket_bytes: int | None = None,
                mode: str = "auto") -> SyncStats:
    """Load the trainer's policy ``version`` into ``engine``: direct when possible, else gathered.

    ``mode``: ``auto`` (direct when :func:`plan_direct` allows it on every rank, else gather),
    ``gather`` (always :func:`r1mega.models.hf_io.iter_hf_weights` -> vLLM's loaders, in
    ``bucket_bytes`` buckets; None = the engine's ``rollout.sync_bucket_mb``) or ``direct``
    (raises :class:`DirectSyncError` naming the reason when it cannot). Collective: every rank
    calls it at the same time. Returns the stats, ``path`` saying which path ran.
    """
    if mode not in MODES:
        raise ValueError(f"weight sync mode {mode!r} is not one of {list(MODES)}")
    if mode != "gather":
        engine.check_weights_awake()
        plan, reason = plan_direct(engine, chunks, arch)
        if _agree(reason is None):
            return engine.load_policy(lambda: push_direct(engine, plan, version), version)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        reason = reason or "the layout allows it on this rank but not on another one (see its message)"
        if mode == "direct":
            raise DirectSyncError(f"rank {rank}: direct weight sync (rollout.sync_mode=direct) is not possible: "
                                  f"{reason}; use sync_mode=auto or gather")
        if reason not in _FALLBACKS_LOGGED:  # once per reason, not every step
            _FALLBACKS_LOGGED.add(reason)
            log.info("weight sync: gather path (direct not possible: %s)", reason)
    from r1mega.models.hf_io import iter_hf_weights

    return engine.sync_weights(iter_hf_weights(chunks, arch), version, bucket_bytes=bucket_bytes)
