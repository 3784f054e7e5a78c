"""The architecture of a decoder-only LM, read from a Hugging Face ``config.json``.

The one reader of HF configs: the model builder (:mod:`r1mega.models`), config validation and
the memory planner (``r1mega plan``) all call :func:`read_hf_config`, and the one family table
:data:`FAMILIES` says what each family is. Pure Python (json only): no torch or megatron here.

Families: Llama / Mistral, Qwen2/Qwen2.5, Qwen3 (dense); Qwen2-MoE, Qwen3-MoE and DeepSeek-V3
(mixture of experts on Megatron-Core's MoE layer; DeepSeek-V3 with multi-head latent attention;
see docs/moe.md); DeepSeek-V2 is read and sized (``r1mega plan``) but not built
(``Family.trainable``: its softmax group-limited routing has no Megatron equivalent yet).
HF options Megatron cannot reproduce are refused here, with the key and its value.
Parameter counts: :mod:`r1mega.models.params`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from r1mega.config.base import ConfigError
from r1mega.models.params import param_counts


@dataclass(frozen=True)
class Family:
    """One supported model family."""

    architectures: tuple[str, ...]   # HF ``architectures`` names
    model_types: tuple[str, ...]     # HF ``model_type`` values
    moe: bool = False                # routed experts (MoE fields read from the config)
    mla: bool = False                # multi-head latent attention (DeepSeek-V2/V3)
    qk_norm: bool = False            # RMSNorm on queries and keys (Qwen3)
    trainable: bool = True           # r1mega builds, converts and trains it (False: `r1mega plan` sizes it only)


FAMILIES: dict[str, Family] = {
    "llama": Family(("LlamaForCausalLM", "MistralForCausalLM"), ("llama", "mistral")),
    "qwen2": Family(("Qwen2ForCausalLM",), ("qwen2",)),
    "qwen3": Family(("Qwen3ForCausalLM",), ("qwen3",), qk_norm=True),
    "qwen2_moe": Family(("Qwen2MoeForCausalLM",), ("qwen2_moe",), moe=True),
    "qwen3_moe": Family(("Qwen3MoeForCausalLM",), ("qwen3_moe",), moe=True, qk_norm=True),
    "deepseek_v2": Family(("DeepseekV2ForCausalLM",), ("deepseek_v2",), moe=True, mla=True, trainable=False),
    "deepseek_v3": Family(("DeepseekV3ForCausalLM",), ("deepseek_v3",), moe=True, mla=True),
}


@dataclass(kw_only=True)
class ModelArch:
    """What the model builder and the planner need to know about an HF decoder-only model."""

    family: str
    vocab_size: int
    hidden_size: int
    ffn_hidden_size: int                    # dense MLP width (the dense layers of an MoE model too)
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

    @property
    def trainable(self) -> bool:
        return FAMILIES[self.family].trainable

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied): :func:`r1mega.models.params.param_counts`."""
        return param_counts(self).total

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("raw")
        return d


def check_trainable(arch: ModelArch) -> None:
    """Refuse a family r1mega reads and sizes but cannot build (see :data:`FAMILIES`)."""
    if not arch.trainable:
        can = sorted(f for f, fam in FAMILIES.items() if fam.trainable)
        raise ConfigError(f"{arch.family} models can be sized (r1mega plan) but not built or trained by r1mega yet; "
                          f"trainable families: {can}")


# ---------------------------------------------------------------------------- reading config.json
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
    """The family of an HF config: its first known ``architectures`` entry, else its ``model_type``."""
    by_arch = {a: name for name, fam in FAMILIES.items() for a in fam.architectures}
    by_type = {t: name for name, fam in FAMILIES.items() for t in fam.model_types}
    for a in cfg.get("architectures") or []:
        if a in by_arch:
            return by_arch[a]
    family = by_type.get(cfg.get("model_type", ""))
    if family is None:
        raise ConfigError(f"{where}: unsupported model (architectures={cfg.get('architectures')}, "
                          f"model_type={cfg.get('model_type')!r}); supported: {sorted(by_arch)}")
    return family


def _int(cfg: dict, where: str, *keys: str, default: int | None = None, required: bool = True) -> int | None:
    """The first of ``keys`` present (not null) as a non-negative int; ``default`` when none is and
    not ``required``."""
    for k in keys:
        v = cfg.get(k)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ConfigError(f"{where}: {k} must be a non-negative integer, got {v!r}")
        return v
    if required:
        raise ConfigError(f"{where}: missing key {keys[0]!r} in the model config")
    return default


def read_hf_config(path_or_dict: str | os.PathLike | dict, where: str | None = None) -> ModelArch:
    """Parse an HF ``config.json`` (a model directory, the file, or the loaded dict)."""
    if isinstance(path_or_dict, dict):
        cfg, where = path_or_dict, where or "config"
    else:
        where = where or os.fspath(path_or_dict)
        cfg = load_hf_config(path_or_dict)
    family = family_of(cfg, where)
    fam = FAMILIES[family]
    hidden = _int(cfg, where, "hidden_size")
    layers = _int(cfg, where, "num_hidden_layers")
    heads = _int(cfg, where, "num_attention_heads")
    if hidden == 0 or layers == 0 or heads == 0:
        raise ConfigError(f"{where}: hidden_size ({hidden}), num_hidden_layers ({layers}) and num_attention_heads "
                          f"({heads}) must be > 0")
    layer_types = cfg.get("layer_types")
    if isinstance(layer_types, list) and len(layer_types) != layers:
        raise ConfigError(f"{where}: num_hidden_layers ({layers}) does not match the {len(layer_types)} entries of "
                          f"layer_types; the file was edited by hand or is damaged")
    head_dim = _int(cfg, where, "head_dim", required=False) or hidden // heads
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
    rope_type = rope.get("rope_type", rope.get("type"))
    if rope_type not in (None, "default") and not (fam.mla and rope_type == "yarn"):
        raise ConfigError(f"{where}: RoPE scaling {rope!r} is not supported yet (only plain RoPE; "
                          f"YaRN with multi-head latent attention)")
    rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
    extra = {}
    if fam.moe:
        extra = read_moe_fields(cfg, family, where)
    if fam.mla:
        extra.update(read_mla_fields(cfg, where, rope))
        head_dim = extra["qk_nope_head_dim"] + extra["qk_rope_head_dim"]
        qkv_bias = False
    return ModelArch(
        family=family,
        vocab_size=_int(cfg, where, "vocab_size"),
        hidden_size=hidden,
        ffn_hidden_size=_int(cfg, where, "intermediate_size"),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=_int(cfg, where, "num_key_value_heads", required=False) or heads,
        head_dim=head_dim,
        rope_theta=float(rope_theta),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        qkv_bias=qkv_bias,
        qk_norm=fam.qk_norm,
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        raw=cfg,
        **extra,
    )


# ---------------------------------------------------------------------------- MoE and MLA fields
def moe_layer_pattern(cfg: dict, num_layers: int, num_experts: int, where: str) -> list[int]:
    """Per layer, 1 = sparse MoE block, 0 = dense MLP: HF Qwen-MoE's rule, layer i is sparse iff
    ``i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0``."""
    step = int(cfg.get("decoder_sparse_step", 1) or 1)
    if step < 1:
        raise ConfigError(f"{where}: decoder_sparse_step ({step}) must be >= 1")
    only = cfg.get("mlp_only_layers") or []
    bad = [i for i in only if not (isinstance(i, int) and 0 <= i < num_layers)]
    if bad:
        raise ConfigError(f"{where}: mlp_only_layers {only} holds {bad}, not layer indices in [0, {num_layers})")
    return [int(i not in only and num_experts > 0 and (i + 1) % step == 0) for i in range(num_layers)]


def read_moe_fields(cfg: dict, family: str, where: str) -> dict:
    """The MoE fields of :class:`ModelArch` from a Qwen2-MoE / Qwen3-MoE / DeepSeek config (the
    routing rules, HF -> Megatron: :mod:`r1mega.models.moe`).

    A Qwen config whose pattern has no sparse layer (``num_experts`` 0, or every layer in
    ``mlp_only_layers``) is a dense model: it returns ``num_experts=0``.
    """
    if family in ("deepseek_v2", "deepseek_v3"):
        return _deepseek_moe(cfg, family, where)
    num_layers = _int(cfg, where, "num_hidden_layers")
    experts = _int(cfg, where, "num_experts", "num_local_experts", default=0, required=False)
    pattern = moe_layer_pattern(cfg, num_layers, experts, where)
    if experts == 0 or not any(pattern):
        return {}
    if cfg.get("use_sliding_window"):
        raise ConfigError(f"{where}: use_sliding_window=true is not supported (full causal attention only)")
    topk = _int(cfg, where, "num_experts_per_tok")
    if not 1 <= topk <= experts:
        raise ConfigError(f"{where}: num_experts_per_tok ({topk}) must be in [1, num_experts ({experts})]")
    norm_topk = bool(cfg.get("norm_topk_prob", False))
    if topk == 1 and norm_topk:
        raise ConfigError(f"{where}: num_experts_per_tok=1 with norm_topk_prob=true (every routing weight 1.0) "
                          f"is not supported: Megatron's top-1 softmax router needs the unnormalised probability")
    moe_ffn = _int(cfg, where, "moe_intermediate_size")
    shared, gate = 0, False
    if family == "qwen2_moe":
        shared = _int(cfg, where, "shared_expert_intermediate_size")
        if shared <= 0:
            raise ConfigError(f"{where}: shared_expert_intermediate_size ({shared}) must be > 0: Qwen2-MoE always "
                              f"has a gated shared expert")
        gate = True
    return dict(num_experts=experts, moe_topk=topk, moe_ffn_hidden_size=moe_ffn, moe_shared_ffn_hidden_size=shared,
                moe_shared_gate=gate, moe_score="softmax", moe_norm_topk=norm_topk,
                moe_aux_loss_coef=float(cfg.get("router_aux_loss_coef", 0.0) or 0.0), moe_layers=pattern)


def _deepseek_moe(cfg: dict, family: str, where: str) -> dict:
    """DeepSeek-V2/V3: layers from ``first_k_dense_replace`` on are MoE (as in transformers), with
    ``n_shared_experts`` shared experts of the routed width."""
    num_layers = _int(cfg, where, "num_hidden_layers")
    experts = _int(cfg, where, "n_routed_experts", "num_local_experts")
    topk = _int(cfg, where, "num_experts_per_tok")
    if not 1 <= topk <= experts:
        raise ConfigError(f"{where}: num_experts_per_tok ({topk}) must be in [1, n_routed_experts ({experts})]")
    if cfg.get("moe_layer_freq", 1) not in (None, 1):
        raise ConfigError(f"{where}: moe_layer_freq={cfg['moe_layer_freq']!r} is not supported (only 1: every "
                          f"layer from first_k_dense_replace on is MoE, as in transformers)")
    dense = _int(cfg, where, "first_k_dense_replace", default=0, required=False)
    pattern = [int(i >= dense) for i in range(num_layers)]
    if not any(pattern):
        raise ConfigError(f"{where}: first_k_dense_replace ({dense}) >= num_hidden_layers ({num_layers}): no MoE layer")
    moe_ffn = _int(cfg, where, "moe_intermediate_size")
    sizes = dict(num_experts=experts, moe_topk=topk, moe_ffn_hidden_size=moe_ffn, moe_layers=pattern,
                 moe_shared_ffn_hidden_size=_int(cfg, where, "n_shared_experts", default=0, required=False) * moe_ffn,
                 moe_scaling=float(cfg.get("routed_scaling_factor") or 1.0))
    groups, group_topk = int(cfg.get("n_group") or 1), int(cfg.get("topk_group") or 1)
    if family == "deepseek_v2":  # softmax scores; greedy top-k, or group-limited with a group's best score
        limited = cfg.get("topk_method", "greedy") == "group_limited_greedy" and groups > 1
        return dict(sizes, moe_score="softmax", moe_norm_topk=bool(cfg.get("norm_topk_prob", False)),
                    moe_num_groups=groups if limited else 0, moe_group_topk=group_topk if limited else 0)
    for key, want in (("topk_method", "noaux_tc"), ("scoring_func", "sigmoid")):
        if cfg.get(key, want) != want:
            raise ConfigError(f"{where}: {key}={cfg[key]!r} is not supported (DeepSeek-V3 routing: {key}={want!r})")
    if not cfg.get("norm_topk_prob", True) and topk > 1:
        raise ConfigError(f"{where}: norm_topk_prob=false is not supported with sigmoid routing (Megatron always "
                          f"renormalises the top-k sigmoid scores)")
    if groups > 1:
        if experts % groups:
            raise ConfigError(f"{where}: n_routed_experts ({experts}) must be a multiple of n_group ({groups})")
        if not 1 <= group_topk <= groups or topk != 2 * group_topk:
            raise ConfigError(f"{where}: num_experts_per_tok ({topk}) must be 2 x topk_group ({group_topk}), with "
                              f"topk_group <= n_group ({groups}): HF scores a group by its top-2 experts, Megatron "
                              f"by its top (num_experts_per_tok / topk_group)")
    return dict(sizes, moe_shared_gate=False, moe_score="sigmoid", moe_norm_topk=topk > 1, moe_aux_loss_coef=0.0,
                moe_expert_bias=True, moe_num_groups=groups if groups > 1 else 0,
                moe_group_topk=group_topk if groups > 1 else 0)


def read_mla_fields(cfg: dict, where: str, rope: dict | None = None) -> dict:
    """Multi-head latent attention fields (DeepSeek-V2/V3, arXiv:2405.04434): queries
    h -> q_lora_rank (RMSNorm) -> heads x (nope + rope), keys/values h -> kv_lora_rank (RMSNorm)
    + one shared rope key -> heads x (nope + v); RoPE on the interleaved rope part.

    ``rope``: the config's RoPE parameters; YaRN (arXiv:2309.00071, DeepSeek-V3's long-context
    RoPE) is read into ``rope_yarn``: inverse frequencies blended between f and f / factor over
    the dims whose rotation counts lie between beta_slow and beta_fast at the original context,
    cos/sin scaled by m(factor, mscale) / m(factor, mscale_all_dim) and the softmax scale by
    m(factor, mscale_all_dim)^2, m(s, a) = 0.1 a ln s + 1 (1 for s <= 1), as transformers does.
    """
    if cfg.get("attention_bias"):
        raise ConfigError(f"{where}: attention_bias=true is not supported with multi-head latent attention")
    if cfg.get("rope_interleave", True) is not True:
        raise ConfigError(f"{where}: rope_interleave={cfg['rope_interleave']!r} is not supported (Megatron's MLA "
                          f"applies RoPE to the interleaved layout, DeepSeek's checkpoint layout)")
    out = dict(q_lora_rank=_int(cfg, where, "q_lora_rank", default=0, required=False),
               kv_lora_rank=_int(cfg, where, "kv_lora_rank"))
    for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        out[k] = _int(cfg, where, k)
    if out["qk_rope_head_dim"] % 2:
        raise ConfigError(f"{where}: qk_rope_head_dim ({out['qk_rope_head_dim']}) must be even")
    rope = rope or {}
    if rope.get("rope_type", rope.get("type")) == "yarn":
        for key in ("attention_factor", "partial_rotary_factor"):
            if rope.get(key) is not None:
                raise ConfigError(f"{where}: YaRN {key}={rope[key]!r} is not supported (only the mscale / "
                                  f"mscale_all_dim form DeepSeek-V3 uses)")
        if rope.get("truncate", True) is not True:
            raise ConfigError(f"{where}: YaRN truncate={rope['truncate']!r} is not supported (Megatron rounds the "
                              f"correction range to integers)")
        orig = rope.get("original_max_position_embeddings")
        factor = rope.get("factor")
        if orig is None:
            raise ConfigError(f"{where}: YaRN RoPE needs original_max_position_embeddings")
        if factor is None:  # transformers' rule for DeepSeek-style configs
            factor = _int(cfg, where, "max_position_embeddings") / orig
        mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")
        if not (mscale and mscale_all):  # transformers then uses m(factor, 1) for the cos/sin scale
            mscale, mscale_all = 1.0, 0.0
        out["rope_yarn"] = dict(factor=float(factor), original_max_position_embeddings=int(orig),
                                beta_fast=float(rope.get("beta_fast") or 32), beta_slow=float(rope.get("beta_slow") or 1),
                                mscale=float(mscale), mscale_all_dim=float(mscale_all))
    return out
