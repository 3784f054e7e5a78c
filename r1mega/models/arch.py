"""The architecture of a decoder-only LM, read from a Hugging Face ``config.json``.

Pure Python (json only): config validation and planning use it without torch or megatron.
Supported families: Llama, Qwen2/Qwen2.5, Qwen3 (dense). MoE families are declared here so
that validation can name them, and are built by the MoE model code.
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
}
MODEL_TYPES = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "mistral": "llama"}


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
    raw: dict = field(default_factory=dict, repr=False)

    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        h, f, v = self.hidden_size, self.ffn_hidden_size, self.vocab_size
        q = self.num_heads * self.head_dim
        kv = self.num_kv_heads * self.head_dim
        attn = h * (q + 2 * kv) + q * h + (q + 2 * kv if self.qkv_bias else 0)
        attn += 2 * self.head_dim if self.qk_norm else 0
        mlp = 3 * h * f
        layer = attn + mlp + 2 * h
        emb = v * h * (1 if self.tie_embeddings else 2)
        return self.num_layers * layer + emb + h

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
    if family == "qwen2":
        qkv_bias = True
    else:
        qkv_bias = bool(cfg.get("attention_bias", False))
    # transformers < 5 writes rope_theta / rope_scaling; >= 5 writes rope_parameters.
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type")) not in (None, "default"):
        raise ConfigError(f"{where}: RoPE scaling {rope!r} is not supported yet (only plain RoPE)")
    rope_theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
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
        qk_norm=family == "qwen3",
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_id=cfg.get("eos_token_id"),
        raw=cfg,
    )
