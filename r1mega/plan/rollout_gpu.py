"""Memory of a dedicated rollout GPU (``rollout.mode=async``, one of the last ``parallel.rollout_ranks`` ranks).

Pure Python. The R rollout GPUs run R / t vLLM engines of TP t = ``parallel.rollout_tensor``
consecutive GPUs each; a GPU holds one TP shard of an engine and no trainer state. The engine is
built as on a colocated rank (``r1mega.rollout.engine`` passes ``rollout.gpu_memory_utilization``
unchanged), so the plan assumes what the code does, not what the GPU could give, and sizes the
shard as :mod:`r1mega.plan.estimate` sizes a colocated engine's at rollout TP t:

* vLLM's budget ``util x GPU``: the engine's weights in ``model.dtype`` (the TP-split matrices
  and the embedding / output layer / t, the norms and other vectors whole; TP 1: the whole
  model), the activation peak of its profile run, and the KV cache = budget - weights - peak
  (every GPU of an engine holds its KV heads of every token: tokens per engine = KV bytes /
  KV bytes per token per GPU);
* the weight transfer: a received flat bucket and the tensors loaded from it, ``2 x
  rollout.sync_bucket_mb`` (outside vLLM's budget, like the colocated sync buckets; every rollout
  rank receives whole tensors, whatever t);
* ``--reserve-gb`` (CUDA context, NCCL, fragmentation).

The rest of the GPU is idle. Nothing else lives there, so ``util`` may go up to
``(GPU - buckets - reserve) / GPU``: the plan says how many KV tokens that would give.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from r1mega.plan.estimate import (DTYPE_BYTES, GiB, Item, engine_activation_bytes, engine_weight_bytes,
                                  kv_bytes_per_token)


@dataclass
class RolloutGpuPlan:
    """Bytes on one rollout GPU (there is one phase: the engine never sleeps)."""

    gpu_bytes: float
    items: list[Item]
    info: dict[str, float]
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(it.bytes("rollout") for it in self.items)


def plan_rollout_gpu(cfg, spec, counts, *, gpu_bytes: float, reserve_bytes: float) -> RolloutGpuPlan:
    """The memory of one rollout GPU, holding one TP shard of an engine of TP t = ``parallel.rollout_tensor``:
    engine weights / t + activation peak + KV cache (= util x GPU - both), weight-transfer buckets,
    reserve; then its problems and notes."""
    b = DTYPE_BYTES[cfg.model.dtype]
    t = cfg.parallel.rollout_tensor
    util = cfg.rollout.gpu_memory_utilization
    w = engine_weight_bytes(spec, counts, t, b)
    act = engine_activation_bytes(spec, t, b, gpu_bytes)
    kv = util * gpu_bytes - w - act
    kv_tok = kv_bytes_per_token(spec, t, b)
    bucket = cfg.rollout.sync_bucket_mb * (1 << 20)
    items = [Item("vllm_weights", f"vLLM weights (TP {t}, {cfg.model.dtype})", {"rollout": w},
                  "the whole policy" if t == 1 else f"this GPU's TP shard of the policy (1 of {t})"),
             Item("vllm_activations", "vLLM activation peak", {"rollout": act}, "estimate of vLLM's profile run"),
             Item("kv_cache", "vLLM KV cache", {"rollout": max(kv, 0.0)},
                  f"gpu_memory_utilization {util:g} x GPU - weights - activation peak"),
             Item("sync_buckets", "weight-transfer buckets", {"rollout": 2 * bucket}, "received bucket + loaded copy"),
             Item("reserve", "CUDA context, NCCL, fragmentation", {"rollout": reserve_bytes}, "--reserve-gb")]
    max_util = math.floor((gpu_bytes - reserve_bytes - 2 * bucket) / gpu_bytes * 100) / 100
    info = dict(engine_weights=w, engine_activations=act, kv_bytes=kv, kv_bytes_per_token=kv_tok,
                kv_tokens=max(kv, 0.0) / kv_tok, max_util=max_util,
                kv_tokens_at_max_util=max(max_util * gpu_bytes - w - act, 0.0) / kv_tok)
    plan = RolloutGpuPlan(gpu_bytes, items, info)
    _diagnose(plan, cfg, _larger_tensor_knob(cfg, spec, counts, w))
    return plan


def _larger_tensor_knob(cfg, spec, counts, weights: float) -> str | None:
    """The knob that halves (about) the engine's weights on a rollout GPU: ``parallel.rollout_tensor``
    2t, with ``parallel.rollout_ranks`` raised to a multiple of it where needed; None when 2t does
    not split the model's heads (r1mega.parallel.layout.check_layout's rule)."""
    t2, R = 2 * cfg.parallel.rollout_tensor, cfg.parallel.rollout_ranks
    if spec.num_heads % t2 or (spec.num_kv_heads % t2 and t2 % spec.num_kv_heads):
        return None
    w2 = engine_weight_bytes(spec, counts, t2, DTYPE_BYTES[cfg.model.dtype])
    ranks = f" and parallel.rollout_ranks={-(-R // t2) * t2} (a multiple of it)" if R % t2 else ""
    return f"parallel.rollout_tensor={t2}{ranks} (engine weights {weights / GiB:.1f} -> {w2 / GiB:.1f} GiB per GPU)"


def _diagnose(plan: RolloutGpuPlan, cfg, tensor_knob: str | None = None) -> None:
    """The engine's shard must hold one full-length sequence in ``util`` x GPU, and ``util`` x GPU
    plus buckets and reserve must fit; a ``util`` well below what the GPU allows is a note.
    ``tensor_knob``: the larger rollout TP to suggest when the shard does not fit (None: none)."""
    G, info = plan.gpu_bytes, plan.info
    t = cfg.parallel.rollout_tensor
    util = cfg.rollout.gpu_memory_utilization
    max_len = cfg.rollout.max_model_len or cfg.model.max_seq_len
    longest = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    need_util = (info["engine_weights"] + info["engine_activations"] + max_len * info["kv_bytes_per_token"]) / G
    max_util = info["max_util"]          # floored to 2 decimals
    if need_util > max_util:
        shard = "the whole model on one GPU" if t == 1 else f"its shard on each of {t} GPUs"
        knobs = ([tensor_knob] if tensor_knob else []) + ["a GPU with more memory, or a smaller model"]
        plan.problems.append(f"the engine (TP {t}: {shard}) needs >= {need_util:.2f} x GPU for its "
                             f"weights and one {max_len}-token sequence of KV cache, at most {max_util:.2f} is free: "
                             + "; or ".join(knobs))
    elif util > max_util:
        plan.problems.append(f"needs {plan.total / GiB:.1f} GiB > GPU {G / GiB:.1f} GiB: lower "
                             f"rollout.gpu_memory_utilization to <= {max_util:.2f}")
    elif util < need_util:
        plan.problems.append(f"rollout.gpu_memory_utilization {util:g} leaves no KV cache for one {max_len}-token "
                             f"sequence: raise it to >= {need_util:.2f} (up to {max_util:.2f} on a rollout GPU)")
    elif max_util - util >= 0.05:
        idle = (max_util - util) * G / GiB
        plan.notes.append(f"rollout.gpu_memory_utilization {util:g} leaves {idle:.1f} GiB idle on each rollout GPU "
                          f"(no trainer there): {max_util:.2f} would hold "
                          f"{info['kv_tokens_at_max_util'] / longest:.0f} full-length sequences instead of "
                          f"{info['kv_tokens'] / longest:.0f} (in async mode only the rollout GPUs use this setting)")
