"""Parameter counts of decoder-only LMs, dense and MoE, from a Hugging Face ``config.json``.

Pure Python (json only). :func:`model_spec` reads the config of a Llama / Mistral, Qwen2,
Qwen3, Qwen2-MoE, Qwen3-MoE, DeepSeek-V2 or DeepSeek-V3 model into a :class:`ModelSpec`;
:func:`param_counts` splits its parameters into the groups the memory planner shards
differently (tensor-parallel matrices, replicated vectors, routed experts, embeddings).

Per decoder layer, with h = hidden size, a / g = query / key-value heads, d = head dim:

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

import json
import os
from dataclasses import dataclass, field

from r1mega.config.base import ConfigError

# architectures[0] (or model_type) -> family
ARCHITECTURES = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "Qwen2MoeForCausalLM": "qwen2_moe", "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV2ForCausalLM": "deepseek_v2", "DeepseekV3ForCausalLM": "deepseek_v3",
}
MODEL_TYPES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "qwen2_moe": "qwen2_moe",
               "qwen3_moe": "qwen3_moe", "deepseek_v2": "deepseek_v2", "deepseek_v3": "deepseek_v3"}


@dataclass(frozen=True, kw_only=True)
class MLA:
    """Multi-head latent attention sizes (DeepSeek-V2/V3)."""

    q_lora_rank: int | None
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """The sizes that determine parameter counts, activations and the KV cache."""

    family: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int                   # dense MLP width (dense layers of an MoE model too)
    qkv_bias: bool = False
    attention_bias: bool = False           # MLA projections with bias (DeepSeek attention_bias)
    qk_norm: bool = False
    tie_embeddings: bool = False
    mla: MLA | None = None
    # MoE (names as in r1mega.models.arch.ModelArch, so check_layout takes either)
    num_experts: int = 0                       # routed experts per MoE layer (E)
    moe_topk: int = 0                          # experts per token (k)
    moe_ffn_hidden_size: int = 0               # one routed expert's width f_e
    moe_shared_ffn_hidden_size: int = 0        # total width of the shared expert(s) f_s
    moe_shared_gate: bool = False              # Qwen2-MoE's sigmoid gate on the shared expert
    moe_layers: tuple[bool, ...] = ()          # per layer: MoE (True) or dense MLP (False)
    raw: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and any(self.moe_layers)


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


def attention_params(s: ModelSpec) -> tuple[int, int]:
    """(tensor-parallel, replicated) parameters of one attention block, its input norm included."""
    h = s.hidden_size
    if s.mla is not None:
        m = s.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        b = 1 if s.attention_bias else 0
        # down-projections and their norms are replicated over TP (Megatron's MLA: 'duplicated')
        rep = h * (m.kv_lora_rank + m.qk_rope_head_dim) + b * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank
        if m.q_lora_rank:
            rep += h * m.q_lora_rank + b * m.q_lora_rank + m.q_lora_rank
            tp = m.q_lora_rank * s.num_heads * qk
        else:
            tp = h * s.num_heads * qk
        tp += m.kv_lora_rank * s.num_heads * (m.qk_nope_head_dim + m.v_head_dim)
        tp += s.num_heads * m.v_head_dim * h + b * h
        return tp, rep + h
    q, kv = s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    tp = h * (q + 2 * kv) + q * h + ((q + 2 * kv) if s.qkv_bias else 0)
    rep = h + (2 * s.head_dim if s.qk_norm else 0)
    return tp, rep


def layer_params(s: ModelSpec, i: int) -> LayerParams:
    """Parameters of decoder layer ``i`` (0-based)."""
    h = s.hidden_size
    tp, rep = attention_params(s)
    rep += h  # pre-MLP RMSNorm
    if s.moe_layers and s.moe_layers[i]:
        per_expert = 3 * h * s.moe_ffn_hidden_size
        tp += 3 * h * s.moe_shared_ffn_hidden_size
        rep += h * s.num_experts + (h if s.moe_shared_gate else 0)
        return LayerParams(tp, rep, s.num_experts * per_expert, s.moe_topk * per_expert)
    return LayerParams(tp + 3 * h * s.ffn_hidden_size, rep, 0, 0)


def param_counts(s: ModelSpec) -> ParamCounts:
    emb = s.vocab_size * s.hidden_size
    return ParamCounts(layers=tuple(layer_params(s, i) for i in range(s.num_layers)), embedding=emb,
                       lm_head=0 if s.tie_embeddings else emb, final_norm=s.hidden_size)


# ---------------------------------------------------------------------------- reading config.json
def _get(cfg: dict, key: str, where: str, default=None, required=True):
    if key in cfg and cfg[key] is not None:
        v = cfg[key]
    elif not required:
        return default
    else:
        raise ConfigError(f"{where}: missing key {key!r} (needed to size the {cfg.get('model_type', '?')} model)")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ConfigError(f"{where}: {key} must be a non-negative integer, got {v!r}")
    return v


def load_hf_config(path: str | os.PathLike) -> dict:
    """The dict of ``config.json`` from a model directory or the file itself."""
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "config.json")
    if not os.path.isfile(p):
        raise ConfigError(f"{p}: no such file; expected a Hugging Face config.json or a model directory holding one")
    with open(p) as f:
        try:
            cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{p}: expected a JSON object, got {type(cfg).__name__}")
    return cfg


def family_of(cfg: dict, where: str = "config") -> str:
    for a in cfg.get("architectures") or []:
        if a in ARCHITECTURES:
            return ARCHITECTURES[a]
    fam = MODEL_TYPES.get(cfg.get("model_type", ""))
    if fam is None:
        raise ConfigError(f"{where}: unsupported model (architectures={cfg.get('architectures')}, "
                          f"model_type={cfg.get('model_type')!r}); supported: {sorted(ARCHITECTURES)}")
    return fam


def model_spec(cfg: dict | str | os.PathLike, where: str | None = None) -> ModelSpec:
    """Read an HF ``config.json`` (dict, file or model directory) into a :class:`ModelSpec`."""
    if not isinstance(cfg, dict):
        where = where or os.fspath(cfg)
        cfg = load_hf_config(cfg)
    where = where or "config"
    fam = family_of(cfg, where)
    h = _get(cfg, "hidden_size", where)
    L = _get(cfg, "num_hidden_layers", where)
    heads = _get(cfg, "num_attention_heads", where)
    if h == 0 or L == 0 or heads == 0:
        raise ConfigError(f"{where}: hidden_size ({h}), num_hidden_layers ({L}) and num_attention_heads ({heads}) "
                          f"must be > 0")
    kw = dict(family=fam, vocab_size=_get(cfg, "vocab_size", where), hidden_size=h, num_layers=L,
              num_heads=heads, num_kv_heads=_get(cfg, "num_key_value_heads", where, heads, required=False),
              head_dim=_get(cfg, "head_dim", where, h // heads, required=False),
              ffn_hidden_size=_get(cfg, "intermediate_size", where),
              tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), raw=cfg)
    if fam in ("qwen2", "qwen2_moe"):
        kw["qkv_bias"] = bool(cfg.get("qkv_bias", True))
    elif fam in ("llama", "qwen3", "qwen3_moe"):
        kw["qkv_bias"] = bool(cfg.get("attention_bias", False))
    kw["qk_norm"] = fam in ("qwen3", "qwen3_moe")
    if fam in ("qwen2_moe", "qwen3_moe"):
        E = _get(cfg, "num_experts", where)
        step = _get(cfg, "decoder_sparse_step", where, 1, required=False) or 1
        dense_only = set(cfg.get("mlp_only_layers") or [])
        kw.update(num_experts=E, moe_topk=_get(cfg, "num_experts_per_tok", where),
                  moe_ffn_hidden_size=_get(cfg, "moe_intermediate_size", where),
                  moe_layers=tuple(E > 0 and i not in dense_only and (i + 1) % step == 0 for i in range(L)))
        if fam == "qwen2_moe":
            kw.update(moe_shared_ffn_hidden_size=_get(cfg, "shared_expert_intermediate_size", where, 0, required=False),
                      moe_shared_gate=True)
    elif fam in ("deepseek_v2", "deepseek_v3"):
        kw["mla"] = MLA(q_lora_rank=_get(cfg, "q_lora_rank", where, None, required=False) or None,
                        kv_lora_rank=_get(cfg, "kv_lora_rank", where),
                        qk_rope_head_dim=_get(cfg, "qk_rope_head_dim", where),
                        qk_nope_head_dim=_get(cfg, "qk_nope_head_dim", where),
                        v_head_dim=_get(cfg, "v_head_dim", where))
        kw["attention_bias"] = bool(cfg.get("attention_bias", False))
        E = _get(cfg, "n_routed_experts", where, 0, required=False)
        first_dense = _get(cfg, "first_k_dense_replace", where, 0, required=False)
        freq = _get(cfg, "moe_layer_freq", where, 1, required=False) or 1
        f_e = _get(cfg, "moe_intermediate_size", where, 0, required=E > 0)
        kw.update(num_experts=E, moe_topk=_get(cfg, "num_experts_per_tok", where, 0, required=E > 0),
                  moe_ffn_hidden_size=f_e,
                  moe_shared_ffn_hidden_size=_get(cfg, "n_shared_experts", where, 0, required=False) * f_e,
                  moe_layers=tuple(E > 0 and i >= first_dense and i % freq == 0 for i in range(L)))
    if kw.get("num_experts") and not 0 < kw["moe_topk"] <= kw["num_experts"]:
        raise ConfigError(f"{where}: num_experts_per_tok ({kw['moe_topk']}) must be in "
                          f"[1, number of experts ({kw['num_experts']})]")
    return ModelSpec(**kw)
