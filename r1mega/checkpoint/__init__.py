"""Checkpoints: Megatron distributed (layout-independent) model + optimizer state, atomic
commits, keep-last-N, resume resolution, and HF <-> r1mega conversion.

Heavy imports (torch, megatron) happen on first use of a function, not on import.
"""

from __future__ import annotations

_EXPORTS = {
    "save_checkpoint": "training", "load_checkpoint": "training", "find_latest_checkpoint": "training",
    "resolve_resume": "training", "check_checkpoint_root": "training", "list_checkpoints": "training",
    "prune_checkpoints": "training", "resume_config_changes": "training", "prepare_resume": "training",
    "write_checkpoint": "training", "read_meta": "training", "verify_checkpoint": "training", "step_dir": "training",
    "CheckpointError": "training", "rng_state": "training", "set_rng_state": "training",
    "hf_to_r1mega": "convert", "r1mega_to_hf": "convert", "load_model_from_checkpoint": "convert",
    "hf_model_dir": "convert",
    "save_sharded": "sharded", "load_sharded": "sharded",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"r1mega.checkpoint.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'r1mega.checkpoint' has no attribute {name!r}")
