"""Hugging Face <-> r1mega checkpoints (what ``r1mega convert`` runs), and model-only loading.

All three are collective under torchrun: every rank holds and reads/writes only its own
shards, at the current layout; no process ever holds the whole model (HF export gathers
one parameter at a time).

    hf_to_r1mega("Qwen2.5-0.5B", "ckpt/qwen", ParallelConfig(tensor=2))
    reshard("ckpt/qwen", "ckpt/qwen-pp2", ParallelConfig(pipeline=2))    # another TP/PP/EP layout
    r1mega_to_hf("ckpt/qwen", "qwen-hf", ParallelConfig())
    chunks, arch = load_model_from_checkpoint("runs/x/checkpoints/step_000100", cfg.model, layout)

A model-only checkpoint is a training checkpoint without ``optim/``: ``meta.json``,
``config.json`` (the HF config, so the architecture is known without the HF directory),
``model/`` (Megatron distributed checkpoint) and the tokenizer files.
"""

from __future__ import annotations

import os

from r1mega.checkpoint.sharded import load_model_shards
from r1mega.checkpoint.training import CheckpointError, check_arch, read_meta, resolve_resume, write_checkpoint
from r1mega.config.sections import ModelConfig, ParallelConfig


def hf_to_r1mega(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, parallel_cfg: ParallelConfig,
                 model_cfg: ModelConfig | None = None, tokenizer_dir: str | None = None) -> str:
    """Load the HF model at the layout ``parallel_cfg`` and save it as a model-only checkpoint."""
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel

    arch = read_hf_config(hf_dir)
    layout = init_parallel(parallel_cfg, arch)
    chunks, arch = load_hf(hf_dir, model_cfg or ModelConfig(), layout)
    return write_checkpoint(out_dir, chunks=chunks, extra={"source": os.path.abspath(os.fspath(hf_dir))},
                            tokenizer_dir=os.fspath(tokenizer_dir or hf_dir))


def load_model_from_checkpoint(ckpt_dir: str | os.PathLike, model_cfg: ModelConfig | None, layout) -> tuple[list, object]:
    """Build this rank's chunks from a checkpoint's ``config.json`` and load its weights.

    ``ckpt_dir`` is a checkpoint (a ``step_*`` dir or a converted model) or a directory of
    ``step_*`` checkpoints (the newest valid one is used). Any saved layout loads.
    """
    from r1mega.models import build, read_hf_config
    from r1mega.parallel.layout import padded_vocab

    path = resolve_resume(None, os.fspath(ckpt_dir))
    read_meta(path)
    arch = read_hf_config(os.path.join(path, "config.json"))
    if layout.padded_vocab_size != padded_vocab(arch.vocab_size, layout.tensor):
        raise CheckpointError(f"checkpoint {path!r} has vocab_size {arch.vocab_size}, but the layout was made for "
                              f"padded vocab {layout.padded_vocab_size}; build the layout with this checkpoint's arch")
    chunks = build(arch, model_cfg or ModelConfig(), layout)
    check_arch(path, chunks)
    load_model_shards(chunks, os.path.join(path, "model"))
    return chunks, arch


def _load_at(ckpt_dir, parallel_cfg: ParallelConfig, model_cfg: ModelConfig | None):
    """Load a checkpoint's model at ``parallel_cfg`` -> (chunks, arch, checkpoint path, tokenizer dir or None)."""
    from r1mega.models import read_hf_config
    from r1mega.parallel.init import init_parallel

    path = resolve_resume(None, os.fspath(ckpt_dir))
    layout = init_parallel(parallel_cfg, read_hf_config(os.path.join(path, "config.json")))
    chunks, arch = load_model_from_checkpoint(path, model_cfg, layout)
    has_tok = any(os.path.isfile(os.path.join(path, n)) for n in ("tokenizer.json", "tokenizer.model",
                                                                  "tokenizer_config.json"))
    return chunks, arch, path, path if has_tok else None


def r1mega_to_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, parallel_cfg: ParallelConfig,
                 model_cfg: ModelConfig | None = None, dtype=None) -> str:
    """Load a checkpoint at the layout ``parallel_cfg`` and export an HF model directory."""
    from r1mega.models import export_hf

    chunks, arch, path, tok_dir = _load_at(ckpt_dir, parallel_cfg, model_cfg)
    export_hf(chunks, arch, out_dir, tokenizer_dir=tok_dir, dtype=dtype)
    return os.fspath(out_dir)


def hf_model_dir(path: str | os.PathLike, cfg) -> str:
    """``path`` itself for an HF model directory; for an r1mega checkpoint, an HF export of it
    (written once next to the checkpoint, as ``<checkpoint>/hf``, at ``cfg.parallel``/``cfg.model``).
    What the commands that take ``--model`` (generate, reject-sample) run the engine on."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "meta.json")):
        return path
    out = os.path.join(path, "hf")
    if not os.path.isfile(os.path.join(out, "config.json")):
        r1mega_to_hf(path, out, cfg.parallel, cfg.model)
    return out


def reshard(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, parallel_cfg: ParallelConfig,
            model_cfg: ModelConfig | None = None) -> str:
    """Rewrite a checkpoint (model weights) at the layout ``parallel_cfg``: every rank loads only
    the slices of its new shards and writes them (Megatron's distributed checkpoint resharding)."""
    chunks, _, path, tok_dir = _load_at(ckpt_dir, parallel_cfg, model_cfg)
    return write_checkpoint(out_dir, chunks=chunks, extra={"source": os.path.abspath(path)}, tokenizer_dir=tok_dir)
