"""Megatron distributed checkpoints (``megatron.core.dist_checkpointing``, torch_dist backend).

Every rank writes only its own shards; a checkpoint saved at one TP/PP layout loads at any
other, because each ``ShardedTensor`` carries its global key, global shape and offset.

Why the save is wrapped (found on CPU/gloo, megatron-core 0.16.1): the torch_dist writer
(``FileSystemWriterAsync.prepare_write_data``) asks for a results queue from
``mp.get_context("spawn").Manager()``. Starting that manager spawns a fresh Python process
that re-imports the launching script as ``__mp_main__``. A script without an
``if __name__ == "__main__":`` guard then runs again in the manager process, re-enters
``init_process_group`` with the same RANK and blocks forever: the observed "hang after
common.pt". With a guard it works but costs a full interpreter start + imports (~6 s per
save here). The sync save path only needs the queue inside the calling process, so
:func:`save_sharded` hands the writer a plain in-process queue for the duration of the
call (nothing spawned; the writer still forks one short-lived process per file bucket, as
on GPUs). The directory must exist before ``dist_checkpointing.save``; we create it.
"""

from __future__ import annotations

import contextlib
import os
import queue

import torch.distributed as dist


@contextlib.contextmanager
def _in_process_results_queue():
    """Give megatron's sync torch_dist writer a plain queue instead of a spawned Manager's."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async as fa

    prev = fa._results_queue
    fa._results_queue = queue.Queue()
    try:
        yield
    finally:
        fa._results_queue = prev


def save_strategy(thread_count: int = 1):
    """torch_dist save strategy: ``thread_count`` files (writer processes) per rank."""
    from megatron.core.dist_checkpointing.strategies.torch import TorchDistSaveShardedStrategy

    return TorchDistSaveShardedStrategy("torch_dist", 1, thread_count=thread_count)


def save_sharded(sharded_state_dict: dict, directory: str, thread_count: int = 1) -> None:
    """Collective: write ``sharded_state_dict`` (ShardedTensors of every rank) to ``directory``."""
    from megatron.core import dist_checkpointing as dc

    if dist.get_rank() == 0:
        os.makedirs(directory, exist_ok=True)
    dist.barrier()
    with _in_process_results_queue():
        dc.save(sharded_state_dict, directory, sharded_strategy=save_strategy(thread_count),
                validate_access_integrity=True)


def load_sharded(sharded_state_dict: dict, directory: str) -> dict:
    """Collective: read the shards this rank's ``sharded_state_dict`` describes (any layout)."""
    from megatron.core import dist_checkpointing as dc

    return dc.load(sharded_state_dict, directory)


def unwrap(module):
    """The Megatron model under DDP / Float16 wrappers."""
    while hasattr(module, "module"):
        module = module.module
    return module


def model_sharded_state_dict(chunks: list) -> dict:
    """Sharded state dict of this rank's model chunks (global keys: layout independent).

    Keys are Megatron's global parameter names, so the nesting under ``chunk{i}`` (one per
    virtual pipeline stage) does not matter when loading at another layout.
    """
    out = {}
    for i, c in enumerate(chunks):
        out[f"chunk{i}"] = unwrap(c).sharded_state_dict()
    return out


def load_model_shards(chunks: list, directory: str) -> None:
    """Fill this rank's chunks from a model checkpoint directory (any saved layout)."""
    sd = model_sharded_state_dict(chunks)
    loaded = load_sharded(sd, directory)
    for i, c in enumerate(chunks):
        unwrap(c).load_state_dict(loaded[f"chunk{i}"], strict=True)
