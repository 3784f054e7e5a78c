"""Parameter counts of a :class:`~r1mega.models.arch.ModelArch`, split by how they are sharded.

The one parameter-count formula: ``ModelArch.num_params()`` and the memory planner
(``r1mega plan``) both use :func:`param_counts`. Pure Python. Per decoder layer, with
h = hidden size, a / g = query / key-value heads, d = head dim:

* GQA attention: ``h*(a*d) + 2*h*(g*d) + (a*d)*h`` (+ ``a*d + 2*g*d`` q/k/v biases for Qwen2,
  + ``2*d`` q/k RMSNorm weights for Qwen3).
* MLA attention (DeepSeek-V2/V3; r_q = q_lora_rank, r_kv = kv_lora_rank, n / r / v = nope / rope /
  value head dims): ``h*r_q + r_q + r_q*a*(n+r)`` (or ``h*a*(n+r)`` without q LoRA)
  ``+ h*(r_kv+r) + r_kv + r_kv*a*(n+v) + a*v*h``.
* SwiGLU MLP of width f: ``3*h*f``. MoE layer: ``E*3*h*f_e`` routed experts, ``h*E`` router,
  shared experts ``3*h*f_s`` (Qwen2-MoE adds a ``h*1`` shared-expert gate).
* Two RMSNorms ``2*h``; embeddings ``V*h`` (twice unless tied); final norm ``h``.

Active parameters per token count ``k`` of the ``E`` routed experts (k = num_experts_per_tok).
DeepSeek-V3's multi-token-prediction module (``num_nextn_predict_layers``) is not counted:
it is not part of the 671B main model and r1mega does not train it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from r1mega.models.arch import ModelArch


@dataclass(frozen=True)
class LayerParams:
    """One decoder layer's parameters by how they are sharded.

    ``tp``: matrices split over tensor parallel ranks (attention, dense/shared MLP).
    ``replicated``: on every TP rank (RMSNorm weights, router, MLA down-projections).
    ``experts``: routed experts, split over expert-parallel x expert-tensor-parallel ranks.
    ``active_experts``: the routed-expert parameters one token passes through.
    """

    tp: int
    replicated: int
    experts: int
    active_experts: int

    @property
    def total(self) -> int:
        return self.tp + self.replicated + self.experts

    @property
    def active(self) -> int:
        return self.tp + self.replicated + self.active_experts


@dataclass(frozen=True)
class ParamCounts:
    """Whole-model counts."""

    layers: tuple[LayerParams, ...]
    embedding: int          # V*h input embedding
    lm_head: int            # V*h output layer (0 when tied)
    final_norm: int

    @property
    def total(self) -> int:
        return sum(p.total for p in self.layers) + self.embedding + self.lm_head + self.final_norm

    @property
    def active(self) -> int:
        return sum(p.active for p in self.layers) + self.embedding + self.lm_head + self.final_norm

    @property
    def experts(self) -> int:
        return sum(p.experts for p in self.layers)


def attention_params(a: ModelArch) -> tuple[int, int]:
    """(tensor-parallel, replicated) parameters of one attention block, its input norm included."""
    h = a.hidden_size
    if a.is_mla:
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        # down-projections and their norms are replicated over TP (Megatron's MLA: 'duplicated')
        rep = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank
        if a.q_lora_rank:
            rep += h * a.q_lora_rank + a.q_lora_rank
            tp = a.q_lora_rank * a.num_heads * qk
        else:
            tp = h * a.num_heads * qk
        tp += a.kv_lora_rank * a.num_heads * (a.qk_nope_head_dim + a.v_head_dim)
        tp += a.num_heads * a.v_head_dim * h
        return tp, rep + h
    q, kv = a.num_heads * a.head_dim, a.num_kv_heads * a.head_dim
    tp = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if a.qkv_bias else 0)
    rep = h + (2 * a.head_dim if a.qk_norm else 0)
    return tp, rep


def layer_params(a: ModelArch, i: int) -> LayerParams:
    """Parameters of decoder layer ``i`` (0-based)."""
    h = a.hidden_size
    tp, rep = attention_params(a)
    rep += h  # pre-MLP RMSNorm
    if a.is_moe and a.moe_layers[i]:
        per_expert = 3 * h * a.moe_ffn_hidden_size
        tp += 3 * h * a.moe_shared_ffn_hidden_size
        rep += h * a.num_experts + (h if a.moe_shared_gate else 0)
        return LayerParams(tp, rep, a.num_experts * per_expert, a.moe_topk * per_expert)
    return LayerParams(tp + 3 * h * a.ffn_hidden_size, rep, 0, 0)


def param_counts(a: ModelArch) -> ParamCounts:
    emb = a.vocab_size * a.hidden_size
    return ParamCounts(layers=tuple(layer_params(a, i) for i in range(a.num_layers)), embedding=emb,
                       lm_head=0 if a.tie_embeddings else emb, final_norm=a.hidden_size)


def kv_bytes_per_token(a: ModelArch, rollout_tensor: int, act_bytes: int) -> float:
    """KV cache per token on one GPU (or CPU rank) of a rollout engine: GQA 2 * max(1, g/r) * d * L
    elements (vLLM replicates KV heads when r > g); MLA (r_kv + r_rope) * L, the same on every TP rank."""
    if a.is_mla:
        per_layer = a.kv_lora_rank + a.qk_rope_head_dim
    else:
        per_layer = 2 * max(1, a.num_kv_heads // rollout_tensor) * a.head_dim
    return per_layer * a.num_layers * act_bytes

