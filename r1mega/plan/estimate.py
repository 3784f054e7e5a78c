"""Per-GPU memory of an r1mega run: trainer state, activations, colocated vLLM engine.

Pure Python. :func:`plan_memory` takes the config, the model (:class:`~r1mega.models.arch.ModelArch`) and the
validated :class:`Layout` and returns a :class:`MemoryPlan`: bytes per GPU for each item in
each memory phase of the RL step, the totals, and the problems with the knob that fixes each.

Phases (colocated, ``parallel.rollout_ranks=0``: one process per GPU holds the trainer shard and
its engine shard, see DESIGN.md):

* ``rollout``: trainer params, fp32 grad buffer, optimizer state and the frozen reference stay
  resident; the engine is awake and takes ``rollout.gpu_memory_utilization`` x GPU memory
  (weights + activation peak + KV cache, as vLLM budgets it).
* ``sync``: the engine's weights are awake (no KV cache) while buckets of at most
  ``rollout.sync_bucket_mb`` are gathered and converted.
* ``train``: the engine sleeps (level 1: weights offloaded to CPU, KV cache dropped); the
  trainer holds activations of the micro-batches in flight and the LM-head workspace.

Disaggregated (``rollout.mode=async``, ``parallel.rollout_ranks=R``): the trainer GPUs (the first
world - R) hold no engine, the whole GPU is the trainer's (no vLLM rows; ``sync`` is trainer rank
0 gathering buckets for the broadcast); the R rollout GPUs are planned by
:mod:`r1mega.plan.rollout_gpu` (``MemoryPlan.rollout_gpu``).

Trainer state per parameter (Megatron mixed precision, ``grad_reduce_in_fp32=True``): 2-byte
bf16/fp16 params (4 in fp32), 4-byte fp32 main grads, Adam 12 bytes (fp32 master copy + two
fp32 moments; 8 without the master copy when params are fp32), the optimizer state divided
over data-parallel x context-parallel ranks with the distributed optimizer (ZeRO-1) and, for
routed experts, over expert-data-parallel ranks ``world / (PP x EP x expert_TP)``.

Activations follow Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models" (arXiv:2205.05198): per layer ``s*b*h*(34 + 5*a*s/h)`` bytes for a GPT
layer (4h GeLU MLP, dropout), divided by t under tensor + sequence parallelism, and only the
layer inputs ``2*s*b*h`` under full recomputation. Here the same bookkeeping is applied to
the layers r1mega trains -- no dropout, RMSNorm, GQA or MLA attention, SwiGLU, MoE -- per
token and 16-bit activation element (see :func:`layer_activation_elems`); fused (flash)
attention stores no ``s x s`` scores, only a 4-byte log-sum-exp per head and token.
With 1F1B pipelining, pipeline rank r holds ``min(p - r, m)`` micro-batches in flight
(interleaved: ``(p - r - 1)*2 + (v - 1)*p + 1`` model chunks; for r = 0 that is Korthikanti's
factor ``1 + (p - 1)/(p*v)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from r1mega.models.arch import ModelArch
from r1mega.models.params import ParamCounts, kv_bytes_per_token, param_counts  # noqa: F401 (re-exported)

GiB = float(1 << 30)
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PHASES = ("rollout", "sync", "train")
FUSED_HEAD_TILE_BYTES = 1 << 30       # kernels/chunked.py GPU_BUDGET_BYTES: one fp32 logits tile
EAGER_HEAD_BYTES_PER_LOGIT = 14       # bf16 logits 2 + fp32 upcast 4 + saved log-softmax 4 + its grad 4


# ---------------------------------------------------------------------------- parameters per GPU
def rank_layers(num_layers: int, pipeline: int, virtual: int | None, rank: int, first: int | None = None,
                last: int | None = None) -> list[int]:
    """Layer indices pipeline rank ``rank`` holds (Megatron's split, ``parallel.layout.stage_layers``:
    even, or with first/last-stage layer counts; interleaved chunks with ``virtual``)."""
    from r1mega.parallel.layout import stage_layers

    return [i for chunk in stage_layers(num_layers, pipeline, virtual, first, last)[rank] for i in chunk]


@dataclass(frozen=True)
class RankParams:
    """Parameters one GPU of pipeline rank ``pipeline_rank`` holds."""

    pipeline_rank: int
    dense: float        # everything but routed experts: TP share + replicated vectors + embeddings
    experts: float      # routed-expert share
    layers: tuple[int, ...]

    @property
    def total(self) -> float:
        return self.dense + self.experts


def rank_params(spec: ModelArch, counts: ParamCounts, layout, pp_rank: int) -> RankParams:
    """Parameters on one GPU of a pipeline stage: TP-split matrices / TP, replicated vectors,
    routed experts / (EP x expert-TP), the vocab-parallel embedding (padded vocab) on the first
    stage, final norm and output layer on the last (a tied output layer is a second copy of
    the embedding when PP > 1)."""
    t, p = layout.tensor, layout.pipeline
    layers = rank_layers(spec.num_layers, p, layout.virtual_pipeline, pp_rank,
                         layout.first_stage_layers, layout.last_stage_layers)
    dense = sum(counts.layers[i].tp / t + counts.layers[i].replicated for i in layers)
    experts = sum(counts.layers[i].experts for i in layers) / (layout.expert * layout.expert_tensor)
    vocab_shard = layout.padded_vocab_size // t * spec.hidden_size
    if pp_rank == 0:
        dense += vocab_shard
    if pp_rank == p - 1:
        dense += spec.hidden_size + (0 if spec.tie_embeddings and p == 1 else vocab_shard)
    return RankParams(pp_rank, dense, experts, tuple(layers))


def optimizer_bytes_per_param(name: str, dtype: str, momentum: float = 0.0) -> int:
    """Optimizer state bytes per parameter: Adam = fp32 master (mixed precision only) + 2 fp32
    moments; SGD = fp32 master (mixed precision only) + fp32 momentum buffer when momentum > 0."""
    master = 4 if dtype != "float32" else 0
    if name == "adam":
        return master + 8
    return master + (4 if momentum else 0)


# ---------------------------------------------------------------------------- activations
@dataclass(frozen=True)
class LayerActivation:
    """16-bit-element counts (plus fp32 bytes) stored per token by one layer for backward.

    ``replicated``: the RMSNorm inputs / outputs (and router scores) every TP rank holds unless
    sequence parallelism splits the tokens; ``split``: tensors split over TP ranks (heads,
    MLP width, routed tokens). ``fp32_bytes``: fp32 values (router logits / probs, attention
    log-sum-exp) with the same split.
    """

    replicated: float
    split: float
    fp32_replicated: float = 0.0
    fp32_split: float = 0.0

    def bytes_per_token(self, act_bytes: int, tensor: int, sequence_parallel: bool) -> float:
        rep = self.replicated * act_bytes + self.fp32_replicated
        if sequence_parallel:
            rep /= tensor
        return rep + (self.split * act_bytes + self.fp32_split) / tensor


def layer_activation_elems(spec: ModelArch, i: int, *, expert_tensor: int = 1, flash: bool = True,
                           seq_len: int = 0) -> LayerActivation:
    """What layer ``i`` saves for backward, per token (Korthikanti et al. 2022, generalised).

    Attention block: norm input h, norm output h (= QKV input), then GQA: Q a*d, K g*d, V g*d,
    attention output a*d (= output-projection input); MLA: down-projection outputs and their
    norms (2*r_q, (r_kv + r_rope) + r_kv, replicated), Q and K a*(n+r), V and output a*v each.
    Unfused attention adds the softmax output a*s (the ``5as/h`` term without dropout).
    Dense MLP: norm input h, norm output h (= fc1 input), fc1 output [gate; up] 2f, fc2 input f.
    MoE MLP: norm input / output 2h, router logits and probabilities 2E fp32; each of the k
    copies of a token: dispatched input h, fc1 output 2f_e, fc2 input f_e, expert output h
    (with expert-TP e the tokens are gathered over e ranks: 2h*e + 3f_e per copy, / TP);
    shared experts 3f_s. Check: MHA, GeLU MLP f = 4h, plus dropout masks, gives 34h + 5as.
    """
    h = spec.hidden_size
    a = spec.num_heads
    rep, split, fp32_split = 2 * h, 0.0, 4.0 * a if flash else 0.0
    if spec.is_mla:
        qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim
        rep += 2 * spec.q_lora_rank + (spec.kv_lora_rank + spec.qk_rope_head_dim) + spec.kv_lora_rank
        split += 2 * a * qk + 2 * a * spec.v_head_dim
    else:
        split += 2 * a * spec.head_dim + 2 * spec.num_kv_heads * spec.head_dim
    if not flash:
        split += a * seq_len
    rep += 2 * h
    fp32_rep = 0.0
    if spec.moe_layers and spec.moe_layers[i]:
        fp32_rep = 8.0 * spec.num_experts
        split += spec.moe_topk * (2 * h * expert_tensor + 3 * spec.moe_ffn_hidden_size)
        split += 3 * spec.moe_shared_ffn_hidden_size
    else:
        split += 3 * spec.ffn_hidden_size
    return LayerActivation(rep, split, fp32_rep, fp32_split)


def in_flight_chunks(pipeline: int, virtual: int | None, rank: int, micro_batches: int) -> float:
    """Micro-batches (in units of this rank's full layer set) whose activations pipeline rank
    ``rank`` holds at the 1F1B peak."""
    if pipeline == 1:
        return 1.0
    if not virtual:
        return float(min(pipeline - rank, micro_batches))
    chunks = min((pipeline - rank - 1) * 2 + (virtual - 1) * pipeline + 1, micro_batches * virtual)
    return chunks / virtual


# ---------------------------------------------------------------------------- rollout engine
def engine_weight_bytes(spec: ModelArch, counts: ParamCounts, rollout_tensor: int, act_bytes: int) -> float:
    """One GPU's share of the engine's weights: everything split over the engine's TP ranks
    except the replicated vectors (norms, router, MLA down-projections)."""
    r = rollout_tensor
    n = sum((p.tp + p.experts) / r + p.replicated for p in counts.layers)
    n += (counts.embedding + counts.lm_head) / r + counts.final_norm
    return n * act_bytes


def vllm_batch_defaults(gpu_bytes: float) -> tuple[int, int]:
    """vLLM's offline (``LLM`` class) max_num_batched_tokens / max_num_seqs: 16384 / 1024 on
    GPUs with >= 70 GiB (H100/H200 class), else 8192 / 256 (vllm/engine/arg_utils.py)."""
    return (16384, 1024) if gpu_bytes >= 70 * GiB else (8192, 256)


def engine_activation_bytes(spec: ModelArch, rollout_tensor: int, act_bytes: int, gpu_bytes: float) -> float:
    """Estimate of vLLM's profiled activation peak: one forward of max_num_batched_tokens
    tokens (hidden states ~4h, MLP intermediate 3f/r, or k routed copies of 3f_e/r) plus the
    sampler's fp32 logits / logprobs / sorted copy for max_num_seqs rows of the vocabulary."""
    tokens, seqs = vllm_batch_defaults(gpu_bytes)
    f = max(3 * spec.ffn_hidden_size, spec.moe_topk * 3 * spec.moe_ffn_hidden_size)
    return tokens * act_bytes * (4 * spec.hidden_size + f / rollout_tensor) + seqs * spec.vocab_size * 4 * 3


# ---------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Item:
    """One row of the breakdown: bytes per GPU in each phase (absent phase = 0)."""

    key: str
    label: str
    phases: dict
    note: str = ""

    def bytes(self, phase: str) -> float:
        return self.phases.get(phase, 0.0)


@dataclass
class MemoryPlan:
    world_size: int
    gpus_per_node: int
    gpu_bytes: float
    spec: ModelArch
    counts: ParamCounts
    layout: object
    pipeline_rank: int                      # the pipeline rank with the highest peak (shown)
    params: RankParams
    items: list[Item]
    totals: dict[str, float]
    info: dict[str, float] = field(default_factory=dict)      # comparison numbers, not in the totals
    problems: list[str] = field(default_factory=list)         # each names the knob that fixes it
    notes: list[str] = field(default_factory=list)
    by_rank: list[dict] = field(default_factory=list)         # phase totals of every pipeline rank
    rollout_gpu: object = None              # RolloutGpuPlan of a dedicated rollout GPU (async), else None
    step_time: object = None                # StepTime (r1mega.plan.steptime), filled by the command

    @property
    def peak(self) -> float:
        return max(self.totals.values())

    @property
    def fits(self) -> bool:
        return not self.problems


def disaggregated(cfg) -> bool:
    """True for ``rollout.mode=async``: ``parallel.rollout_ranks`` GPUs only generate, the others only train."""
    return cfg.parallel.rollout_ranks > 0


def _micro_batches(cfg, layout) -> int:
    """Worst case: every sample as long as the engine allows."""
    longest = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    tokens = cfg.data.prompts_per_step * cfg.algorithm.group_size * longest
    per_rank = tokens / (layout.data * cfg.trainer.mini_batches)          # CP splits each micro-batch, not their number
    return max(1, math.ceil(per_rank / cfg.trainer.micro_batch_tokens))


def _rank_items(cfg, spec, counts, layout, pp_rank, gpu_bytes, reserve_bytes):
    """(items, info, params) for one GPU of pipeline rank ``pp_rank``."""
    b = DTYPE_BYTES[cfg.model.dtype]
    t, cp = layout.tensor, layout.context
    rp = rank_params(spec, counts, layout, pp_rank)
    expert_dp = layout.world_size // (layout.pipeline * layout.expert * layout.expert_tensor)
    opt = optimizer_bytes_per_param(cfg.optimizer.name, cfg.model.dtype, cfg.optimizer.momentum)
    dense_shards = layout.data * cp if cfg.parallel.distributed_optimizer else 1
    expert_shards = expert_dp if cfg.parallel.distributed_optimizer else 1
    resident = ("rollout", "sync", "train")
    moe = spec.is_moe
    items = [
        Item("policy_params", f"policy params ({cfg.model.dtype})", dict.fromkeys(resident, rp.total * b),
             f"{rp.total / 1e9:.2f}B params on this GPU" + (f" ({rp.experts / 1e9:.2f}B expert)" if moe else "")),
        Item("grads", "grads (fp32 main grads)", dict.fromkeys(resident, rp.total * 4),
             "grad_reduce_in_fp32: a full fp32 buffer for this GPU's params"),
        Item("optimizer", f"optimizer ({cfg.optimizer.name}, {opt} B/param)",
             dict.fromkeys(resident, opt * (rp.dense / dense_shards + rp.experts / expert_shards)),
             f"sharded over DP x CP = {dense_shards}" + (f", experts over expert-DP = {expert_shards}" if moe else "")
             if cfg.parallel.distributed_optimizer else "not sharded (parallel.distributed_optimizer=false)"),
    ]
    if cfg.algorithm.kl_coef > 0:
        items.append(Item("reference", f"reference model ({cfg.model.dtype})", dict.fromkeys(resident, rp.total * b),
                          f"frozen copy: algorithm.kl_coef={cfg.algorithm.kl_coef:g} > 0"))
    # activations
    N = cfg.trainer.micro_batch_tokens / cp
    longest = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    seq = min(longest, cfg.trainer.micro_batch_tokens)
    sp = layout.sequence_parallel
    m = _micro_batches(cfg, layout)
    chunks = in_flight_chunks(layout.pipeline, layout.virtual_pipeline, pp_rank, m)

    def acts(flash: bool, recompute: bool) -> float:
        per_layer = [layer_activation_elems(spec, i, expert_tensor=layout.expert_tensor, flash=flash, seq_len=seq)
                     .bytes_per_token(b, t, sp) for i in rp.layers]
        if pp_rank == layout.pipeline - 1:
            per_layer.append(2 * spec.hidden_size * b / (t if sp else 1))  # final norm in / out
        if not per_layer:
            return 0.0
        if not recompute:
            return N * sum(per_layer) * chunks
        inputs = len(rp.layers) * spec.hidden_size * b / (t if sp else 1)   # checkpointed layer inputs
        return N * (inputs * chunks + max(per_layer))                         # + one layer recomputed

    recompute = cfg.model.recompute
    act = acts(True, recompute)
    formula = "full recompute: layer inputs + 1 layer" if recompute else "all layers stored"
    items.append(Item("activations", "activations", {"train": act},
                      f"{formula}; {cfg.trainer.micro_batch_tokens} tokens/micro-batch x {chunks:g} in flight"))
    info = {"activations_no_recompute": acts(True, False), "activations_recompute": acts(True, True),
            "activations_unfused_attention": acts(False, recompute), "micro_batches": float(m)}
    # LM head: only on the last pipeline stage, over the scored tokens of one micro-batch
    logits = cfg.trainer.micro_batch_tokens * layout.padded_vocab_size / t
    eager, fused = EAGER_HEAD_BYTES_PER_LOGIT * logits, min(4 * logits, FUSED_HEAD_TILE_BYTES)
    use_eager = cfg.trainer.logprob_backend == "eager"
    last = pp_rank == layout.pipeline - 1
    items.append(Item("lm_head", "LM-head logits" + (" (eager)" if use_eager else " (fused kernel)"),
                      {"train": (eager if use_eager else fused) if last else 0.0},
                      "on the last pipeline stage only" if not last else
                      f"eager would hold {eager / GiB:.2f} GiB" if not use_eager else
                      f"fused (trainer.logprob_backend=auto) needs {fused / GiB:.2f} GiB"))
    info.update(lm_head_eager=eager, lm_head_fused=fused)
    if not disaggregated(cfg):
        eng_items, eng_info = _engine_items(cfg, spec, counts, layout, gpu_bytes)
        items += eng_items
        info.update(eng_info)
    bucket = cfg.rollout.sync_bucket_mb * (1 << 20)
    items.append(Item("sync_buckets", "weight-sync buckets", {"sync": 2 * bucket},
                      "gathered + converted bucket" + (" (trainer rank 0, for the broadcast)"
                                                       if disaggregated(cfg) else "")))
    items.append(Item("reserve", "CUDA context, NCCL, fragmentation", dict.fromkeys(resident, reserve_bytes),
                      "--reserve-gb"))
    return items, info, rp


def _engine_items(cfg, spec, counts, layout, gpu_bytes):
    """(items, info) of the engine colocated on a trainer GPU: weights (rollout and sync phases),
    activation peak and KV cache (rollout phase) inside ``gpu_memory_utilization`` x GPU."""
    b = DTYPE_BYTES[cfg.model.dtype]
    r = layout.rollout_tensor
    util = cfg.rollout.gpu_memory_utilization
    w = engine_weight_bytes(spec, counts, r, b)
    eng_act = engine_activation_bytes(spec, r, b, gpu_bytes)
    budget = util * gpu_bytes
    kv = budget - w - eng_act
    items = [Item("vllm_weights", f"vLLM weights (TP {r})", {"rollout": w, "sync": w},
                  "second copy of the policy; offloaded while the engine sleeps (train phase)"),
             Item("vllm_activations", "vLLM activation peak", {"rollout": eng_act}, "estimate of vLLM's profile run"),
             Item("kv_cache", "vLLM KV cache", {"rollout": max(kv, 0.0)},
                  f"gpu_memory_utilization {util:g} x GPU - weights - activation peak")]
    kv_tok = kv_bytes_per_token(spec, r, b)
    info = dict(kv_bytes=kv, kv_bytes_per_token=kv_tok, kv_tokens=max(kv, 0.0) / kv_tok,
                engine_weights=w, engine_activations=eng_act, engine_budget=budget)
    return items, info


def plan_memory(cfg, spec: ModelArch, layout, *, gpu_mem_gb: float = 80.0, gpus_per_node: int = 8,
                reserve_gb: float = 4.0) -> MemoryPlan:
    """The per-GPU memory plan of ``cfg`` for ``spec`` on ``layout`` (already validated).

    Every pipeline rank is planned (stages differ: embedding, LM head, dense vs MoE layers,
    micro-batches in flight); the one with the highest peak is returned, carrying the
    problems of every rank and the per-rank phase totals in ``by_rank``. Disaggregated
    (async), ``layout`` is the trainer's over world - R ranks, and ``rollout_gpu`` plans the R
    rollout GPUs (their problems join the plan's, prefixed "rollout GPU: ").
    """
    from r1mega.plan.rollout_gpu import plan_rollout_gpu

    gpu_bytes, reserve = gpu_mem_gb * GiB, reserve_gb * GiB
    counts = param_counts(spec)
    plans = []
    for pp_rank in range(layout.pipeline):
        items, info, rp = _rank_items(cfg, spec, counts, layout, pp_rank, gpu_bytes, reserve)
        totals = {ph: sum(it.bytes(ph) for it in items) for ph in PHASES}
        plan = MemoryPlan(world_size=layout.world_size + cfg.parallel.rollout_ranks, gpus_per_node=gpus_per_node,
                          gpu_bytes=gpu_bytes, spec=spec, counts=counts, layout=layout, pipeline_rank=pp_rank,
                          params=rp, items=items, totals=totals, info=info)
        _diagnose(plan, cfg)
        plans.append(plan)
    shown = max(plans, key=lambda p: p.peak)
    shown.by_rank = [p.totals for p in plans]
    for p in plans:
        if p is not shown:
            shown.problems += [f"pipeline rank {p.pipeline_rank}: {msg}" for msg in p.problems
                               if msg not in shown.problems]
    if disaggregated(cfg):
        shown.rollout_gpu = rg = plan_rollout_gpu(cfg, spec, counts, gpu_bytes=gpu_bytes, reserve_bytes=reserve)
        shown.problems += [f"rollout GPU: {msg}" for msg in rg.problems]
        shown.notes += [f"rollout GPU: {msg}" for msg in rg.notes]
    return shown


def _resident_knobs(plan: MemoryPlan, cfg, by: dict) -> list[str]:
    """What shrinks the resident trainer state or the engine's weights, biggest item first."""
    lay, spec = plan.layout, plan.spec
    gib = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
    knobs = []
    r2 = lay.rollout_tensor * 2
    if "vllm_weights" in by and spec.num_heads % r2 == 0 and lay.world_size % r2 == 0:
        knobs.append((by["vllm_weights"].bytes("sync") / 2,
                      f"parallel.rollout_tensor={r2} (engine weights {gib(by['vllm_weights'].bytes('sync'))} -> "
                      f"{gib(by['vllm_weights'].bytes('sync') / 2)})"))
    if "reference" in by:
        knobs.append((by["reference"].bytes("train"), f"algorithm.kl_coef=0 (no reference model: frees "
                                                       f"{gib(by['reference'].bytes('train'))})"))
    state = by["policy_params"].bytes("train") + by["grads"].bytes("train")
    knobs.append((state / 2, f"more model parallelism for the params + fp32 grads ({gib(state)}): parallel.pipeline"
                             + (" / parallel.expert x expert_tensor" if spec.is_moe else "") + " / parallel.tensor"))
    opt = by["optimizer"].bytes("train")
    more = "more trainer GPUs (world - parallel.rollout_ranks)" if disaggregated(cfg) else "more GPUs"
    if not cfg.parallel.distributed_optimizer and lay.data > 1:
        knobs.append((opt, f"parallel.distributed_optimizer=true (optimizer {gib(opt)} / DP {lay.data})"))
    else:
        knobs.append((opt / 2, f"{more}: the distributed optimizer divides the optimizer state ({gib(opt)}) "
                               f"over DP" + (" and expert-DP" if spec.is_moe else "")))
    return [k for _, k in sorted(knobs, key=lambda kv: -kv[0])]


def _diagnose(plan: MemoryPlan, cfg) -> None:
    """Fill ``plan.problems`` (each with the knob to turn) and ``plan.notes``."""
    G = plan.gpu_bytes
    by = {it.key: it for it in plan.items}
    resident = plan.totals["train"] - by["activations"].bytes("train") - by["lm_head"].bytes("train")
    longest = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    gib = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
    if longest > cfg.trainer.micro_batch_tokens:
        plan.problems.append(f"a sample can be {longest} tokens (data.max_prompt_len + rollout.max_new_tokens) but "
                             f"trainer.micro_batch_tokens is {cfg.trainer.micro_batch_tokens}: "
                             f"raise it to >= {longest}")
    if resident >= G:
        plan.problems.append(f"the trainer state alone needs {gib(resident)} (params, grads, optimizer"
                             + (", reference" if "reference" in by else "") + f", reserve) of the GPU's {gib(G)}: "
                             + "; or ".join(k for k in _resident_knobs(plan, cfg, by) if "rollout_tensor" not in k))
        return
    if "vllm_weights" in by:
        _diagnose_engine(plan, cfg, by, resident)
    if plan.totals["train"] > G:
        _diagnose_train(plan, cfg)
    _notes(plan, cfg)


def _diagnose_engine(plan: MemoryPlan, cfg, by: dict, resident: float) -> None:
    """The colocated engine must hold one full-length sequence, and fit beside the resident trainer state."""
    G, info = plan.gpu_bytes, plan.info
    max_len = cfg.rollout.max_model_len or cfg.model.max_seq_len
    gib = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
    util = cfg.rollout.gpu_memory_utilization
    need_util = (info["engine_weights"] + info["engine_activations"] + max_len * info["kv_bytes_per_token"]) / G
    max_util = (G - resident) / G
    if need_util > max_util:
        plan.problems.append(
            f"the rollout engine does not fit beside the trainer state ({gib(resident)} resident; the engine needs "
            f">= {need_util:.2f} x GPU for its weights and one {max_len}-token sequence of KV cache, at most "
            f"{max(max_util, 0):.2f} is free): " + "; or ".join(_resident_knobs(plan, cfg, by)))
    elif util > max_util:
        plan.problems.append(f"rollout phase needs {gib(plan.totals['rollout'])} > GPU {gib(G)}: lower "
                             f"rollout.gpu_memory_utilization to <= {math.floor(max_util * 100) / 100:.2f} "
                             f"(>= {need_util:.2f} still holds one {max_len}-token sequence)")
    elif util < need_util:
        plan.problems.append(f"rollout.gpu_memory_utilization {util:g} leaves no KV cache for one {max_len}-token "
                             f"sequence: raise it to >= {need_util:.2f} (at most {max_util:.2f} is free)")


def _diagnose_train(plan: MemoryPlan, cfg) -> None:
    """The train phase is over the GPU: the knobs that shrink activations and the LM head."""
    G, info, lay = plan.gpu_bytes, plan.info, plan.layout
    longest = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    gib = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
    knobs = []
    if not cfg.model.recompute:
        knobs.append(f"model.recompute=true (activations {gib(info['activations_no_recompute'])} -> "
                     f"{gib(info['activations_recompute'])})")
    if cfg.trainer.logprob_backend == "eager":
        knobs.append(f"trainer.logprob_backend=auto (LM head {gib(info['lm_head_eager'])} -> "
                     f"{gib(info['lm_head_fused'])})")
    if lay.tensor > 1 and not lay.sequence_parallel:
        knobs.append("parallel.sequence_parallel=true")
    if cfg.trainer.micro_batch_tokens > longest:
        knobs.append(f"trainer.micro_batch_tokens down to {longest} (activations scale with it)")
    knobs.append("more model parallelism (parallel.tensor / pipeline / context)")
    plan.problems.append(f"train phase needs {gib(plan.totals['train'])}, {gib(plan.totals['train'] - G)} over the "
                         f"GPU: " + "; or ".join(knobs))


def _notes(plan: MemoryPlan, cfg) -> None:
    info, lay = plan.info, plan.layout
    longest = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    gib = lambda x: f"{x / GiB:.1f} GiB"  # noqa: E731
    colocated = not disaggregated(cfg)
    if not cfg.parallel.distributed_optimizer and lay.data > 1:
        plan.notes.append("parallel.distributed_optimizer=true would divide the optimizer state by the DP size")
    per_engine = cfg.data.prompts_per_step * cfg.algorithm.group_size / lay.rollout_data
    if colocated and 0 < info["kv_tokens"] < per_engine * longest:
        plan.notes.append(f"the KV cache holds {info['kv_tokens'] / longest:.0f} full-length sequences per engine, "
                          f"the step asks {per_engine:.0f}: vLLM runs them in waves (slower, not an error)")
    if cfg.model.fp8:
        plan.notes.append("model.fp8: Transformer Engine's FP8 weight copies and scaling history are not in the table")
    plan.notes.append(f"unfused attention would store the s x s scores: activations "
                      f"{gib(info['activations_unfused_attention'])} (fused attention assumed: Transformer Engine)")
    spans = [f"{name} {size}" for name, size in (("trainer TP", lay.tensor), ("rollout TP", lay.rollout_tensor))
             if size > plan.gpus_per_node]
    if spans:
        plan.notes.append(f"{' and '.join(spans)} span(s) nodes ({plan.gpus_per_node} GPUs per node): those "
                          f"all-reduces cross the inter-node fabric (slower than NVLink)")
