"""Process-group setup from torchrun's environment: the only place groups are created.

    layout = init_parallel(cfg.parallel, arch, seed=cfg.run.seed)

gloo on CPU, NCCL on GPU. A plain ``python`` launch (no torchrun variables) is a world of one.
Megatron's parallel_state is built from the validated :class:`Layout`; model code then reads
its shard from parallel_state and never looks at the layout itself.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist

from r1mega.config.sections import ParallelConfig
from r1mega.parallel import compat
from r1mega.parallel.layout import Layout, check_layout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) without them."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(timeout_s: float = 600.0) -> tuple[int, int]:
    """Initialise torch.distributed (idempotent). Returns (rank, world_size)."""
    compat.apply()
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    rank, world, local_rank = world_from_env()
    if world == 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        # a plain `python` run: a port of our own (a MASTER_PORT inherited from a parent process
        # that initialised torch.distributed itself may still be held by it)
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(_free_port())
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    from datetime import timedelta

    dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    return rank, world


def init_parallel(parallel: ParallelConfig, arch=None, seed: int = 1234) -> Layout:
    """torch.distributed + Megatron's model-parallel groups + the model-parallel RNG seeds."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    _, world = init_distributed()
    layout = check_layout(parallel, world, arch)
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        virtual_pipeline_model_parallel_size=layout.virtual_pipeline,
        context_parallel_size=layout.context,
        expert_model_parallel_size=layout.expert,
        expert_tensor_parallel_size=layout.expert_tensor,
    )
    model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    return layout


def destroy_parallel() -> None:
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
