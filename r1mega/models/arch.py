"""The architecture of a decoder-only LM, read from a Hugging Face ``config.json``.

Pure Python (json only): config validation and planning use it without torch or megatron.
Supported families: Llama, Qwen2/Qwen2.5, Qwen3 (dense); Qwen2-MoE, Qwen3-MoE and DeepSeek-V3
(mixture of experts on Megatron-Core's MoE layer; DeepSeek-V3 with multi-head latent attention;
see docs/moe.md). The MoE and MLA fields are read by :func:`r1mega.models.moe.read_moe_fields`
and :func:`r1mega.models.moe.read_mla_fields`, which refuse HF options Megatron cannot reproduce.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from r1mega.config.base import ConfigError

FAMILIES = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "MistralForCausalLM": "llama",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV3ForCausalLM": "deepseek_v3",
}
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "llama",
               "qwen2_moe": "qwen2_moe", "qwen3_moe": "qwen3_moe", "deepseek_v3": "deepseek_v3"}
MOE_FAMILIES = ("qwen2_moe", "qwen3_moe", "deepseek_v3")


@dataclass(kw_only=True)
class ModelArch:
    """What the model builder needs to know about an HF decoder-only model."""

    family: str
    vocab_size: int
    hidden_size: int
    ffn_hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    qkv_bias: bool = False
    qk_norm: bool = False
    tie_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    # Mixture of experts (num_experts == 0: a dense model; the other fields are then unused).
    num_experts: int = 0
    moe_topk: int = 0
    moe_ffn_hidden_size: int = 0            # one routed expert's intermediate size
    moe_shared_ffn_hidden_size: int = 0     # the shared expert(s), all together; 0 = none
    moe_shared_gate: bool = False           # sigmoid(x . w) gate on the shared expert (Qwen2-MoE)
    moe_score: str = "softmax"              # router score function: softmax | sigmoid
    moe_norm_topk: bool = False             # renormalise the top-k probabilities to sum to 1
    moe_aux_loss_coef: float = 0.0          # load-balancing loss coefficient (Switch, 2101.03961)
    moe_layers: list[int] = field(default_factory=list)  # per layer: 1 = MoE, 0 = dense MLP
    moe_expert_bias: bool = False           # aux-loss-free balancing bias on the routing scores (DeepSeek-V3)
    moe_num_groups: int = 0                 # group-limited routing: expert groups (0 = off)
    moe_group_topk: int = 0                 # ... groups each token may use
    moe_scaling: float = 1.0                # routed_scaling_factor on the combined expert weights
    # Multi-head latent attention (DeepSeek-V2/V3; kv_lora_rank == 0: ordinary attention).
    q_lora_rank: int = 0                    # 0 = queries without a low-rank projection
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    rope_yarn: dict = field(default_factory=dict)  # MLA's YaRN RoPE (factor, original_max_position_embeddings,
    #                                                 beta_fast, beta_slow, mscale, mscale_all_dim); {} = plain
    raw: dict = field(default_factory=dict, repr=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        h, f, v = self.hidden_size, self.ffn_hidden_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = h * (q + 2 * kv) + q * h + (q + 2 * kv if self.qkv_bias else 0)
        attn += 2 * self.head_dim if self.qk_norm else 0
        if self.is_mla:
            n, ql, kvl = self.num_heads, self.q_lora_rank, self.kv_lora_rank
            qk = self.qk_nope_head_dim + self.qk_rope_head_dim
            attn = (h * ql + ql + ql * n * qk) if ql else h * n * qk
            attn += h * (kvl + self.qk_rope_head_dim) + kvl + kvl * n * (self.qk_nope_head_dim + self.v_head_dim)
            attn += n * self.v_head_dim * h
        dense_mlp = 3 * h * f
        moe_mlp = (3 * h * self.moe_ffn_hidden_size * self.num_experts + h * self.num_experts
                   + 3 * h * self.moe_shared_ffn_hidden_size + (h if self.moe_shared_gate else 0))
        moe_layers = sum(self.moe_layers) if self.is_moe else 0
        layers = self.num_layers * (attn + 2 * h) + (self.num_layers - moe_layers) * dense_mlp + moe_layers * moe_mlp
        emb = v * h * (1 if self.tie_embeddings else 2)
        return layers + emb + h

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("raw")
        return d


def _req(cfg: dict, key: str, where: str):
    if key not in cfg:
        raise ConfigError(f"{where}: missing key {key!r} in the model config")
    return cfg[key]


def read_hf_config(path_or_dict: str | os.PathLike | dict) -> ModelArch:
    """Parse an HF ``config.json`` (a model directory, the file, or the loaded dict)."""
    if isinstance(path_or_dict, dict):
        cfg, where = path_or_dict, "config"
    else:
        p = os.fspath(path_or_dict)
        if os.path.isdir(p):
            p = os.path.join(p, "config.json")
        if not os.path.isfile(p):
            raise ConfigError(f"{p}: no such file; expected a Hugging Face model directory with config.json")
        with open(p) as f:
            try:
                cfg = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}: not valid JSON ({e})") from None
        where = p
    family = None
    for a in cfg.get("architectures") or []:
        family = FAMILIES.get(a)
        if family:
            break
    if family is None:
        family = MODEL_TYPES.get(cfg.get("model_type", ""))
    if family is None:
        raise ConfigError(
            f"{where}: unsupported model (architectures={cfg.get('architectures')}, "
            f"model_type={cfg.get('model_type')!r}); supported: {sorted(set(FAMILIES))}")
    heads = _req(cfg, "num_attention_heads", where)
    hidden = _req(cfg, "hidden_size", where)
    head_dim = cfg.get("head_dim") or hidden // heads
    if cfg.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"{where}: hidden_act={cfg['hidden_act']!r} is not supported (only 'silu', SwiGLU MLPs)")
    if family == "qwen2":
        qkv_bias = True
    elif family == "qwen2_moe":
        qkv_bias = bool(cfg.get("qkv_bias", True))  # transformers < 5 configs: always biased
    else:
        qkv_bias = bool(cfg.get("attention_bias", False))
    # transformers < 5 writes rope_theta / rope_scaling; >= 5 writes rope_parameters.
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    yarn_mla = family == "deepseek_v3" and rope.get("rope_type", rope.get("type")) == "yarn"
    if rope.get("rope_type", rope.get("type")) not in (None, "default") and not yarn_mla:
        raise ConfigError(f"{where}: RoPE scaling {rope!r} is not supported yet (only plain RoPE; "
                          f"YaRN with multi-head latent attention)")
    rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    moe = {}
    if family in MOE_FAMILIES:
        from r1mega.models.moe import read_mla_fields, read_moe_fields
        moe = read_moe_fields(cfg, family, where)
        if family == "deepseek_v3":
            moe.update(read_mla_fields(cfg, where, rope))
            head_dim = moe["qk_nope_head_dim"] + moe["qk_rope_head_dim"]
            qkv_bias = False
    return ModelArch(
        family=family,
        vocab_size=_req(cfg, "vocab_size", where),
        hidden_size=hidden,
        ffn_hidden_size=_req(cfg, "intermediate_size", where),
        num_layers=_req(cfg, "num_hidden_layers", where),
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=head_dim,
        rope_theta=float(rope_theta),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        qkv_bias=qkv_bias,
        qk_norm=family in ("qwen3", "qwen3_moe"),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        raw=cfg,
        **moe,
    )
