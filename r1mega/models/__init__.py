"""Megatron-Core models built from Hugging Face configs, and HF weight conversion.

    layout = init_parallel(cfg.parallel, arch)
    chunks, arch = load_hf(path, cfg.model, layout)     # this rank's shards
    export_hf(chunks, arch, out_dir)                     # collective; rank 0 writes
"""

from __future__ import annotations

import os

from r1mega.config.sections import ModelConfig
from r1mega.models.arch import ModelArch, check_trainable, read_hf_config

__all__ = ["ModelArch", "read_hf_config", "load_hf", "build", "export_hf", "iter_hf_weights"]


def build(arch: ModelArch, model_cfg: ModelConfig, layout) -> list:
    """This rank's freshly initialised model chunks."""
    check_trainable(arch)
    from r1mega.models.megatron_gpt import build_model_chunks
    return build_model_chunks(arch, model_cfg, layout)


def load_hf(path: str | os.PathLike, model_cfg: ModelConfig | None, layout) -> tuple[list, ModelArch]:
    """Build this rank's model chunks for the HF model at ``path`` and load its weights."""
    from r1mega.models.hf_io import load_hf_weights

    arch = read_hf_config(path)
    model_cfg = model_cfg or ModelConfig()
    chunks = build(arch, model_cfg, layout)
    load_hf_weights(chunks, path, arch)
    return chunks, arch


def export_hf(chunks, arch, out_dir, tokenizer_dir=None, dtype=None):
    from r1mega.models.hf_io import export_hf as _export
    return _export(chunks, arch, out_dir, tokenizer_dir=tokenizer_dir, dtype=dtype)


def iter_hf_weights(chunks, arch):
    from r1mega.models.hf_io import iter_hf_weights as _iter
    return _iter(chunks, arch)
