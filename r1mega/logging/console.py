"""Console set-up shared by every ``r1mega`` command entry point (``r1mega.cli``,
``python -m r1mega.reward_model``): rank-aware log levels, known-harmless warnings silenced,
the environment vLLM and tokenizers expect in-process."""

from __future__ import annotations

import logging
import os

# Known-harmless warnings that megatron-core and torch print on every step; the console stays readable.
QUIET_WARNINGS = (r".*torch\.distributed\.\w+.? is deprecated.*", r"Apex is not installed.*",
                  r"The \.grad attribute of a Tensor that is not a leaf Tensor.*",
                  r".*TransformerEngine.*not installed.*", r".*Transformer Engine and Apex are not installed.*")


def setup_logging() -> None:
    """INFO on global rank 0, WARNING elsewhere (``[r1mega rankN]`` prefix); Megatron's per-parameter
    INFO lines off; vLLM in-process and quiet, tokenizers single-threaded (unless already set)."""
    import warnings

    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[r1mega rank{rank}] %(message)s")
    for noisy in ("megatron", "megatron.core"):  # Megatron lists every parameter at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
