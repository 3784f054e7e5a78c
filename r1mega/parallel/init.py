"""Process-group setup from torchrun's environment: the only place groups are created.

    layout = init_parallel(cfg.parallel, arch, seed=cfg.run.seed, run=cfg.run)

gloo on CPU, NCCL on GPU. A plain ``python`` launch (no torchrun variables) is a world of one.
Megatron's parallel_state is built from the validated :class:`Layout`; model code then reads
its shard from parallel_state and never looks at the layout itself.
"""

from __future__ import annotations

import logging
import os
import socket

import torch
import torch.distributed as dist

from r1mega.config.sections import ParallelConfig, RunConfig
from r1mega.parallel import compat, watchdog
from r1mega.parallel.layout import Layout, check_layout

log = logging.getLogger("r1mega.parallel")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_from_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables; (0, 1, 0) without them."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(run: RunConfig | None = None) -> tuple[int, int]:
    """Initialise torch.distributed (idempotent). Returns (rank, world_size).

    ``run`` (default: RunConfig's defaults) gives the collective timeout of every process group
    (``run.collective_timeout_s``) and the hung-rank watchdog's (``run.hang_timeout_s``, see
    :mod:`r1mega.parallel.watchdog`), which starts here when there is more than one rank.
    """
    compat.apply()
    run = run or RunConfig()
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
        # NCCL for CUDA tensors (Megatron's collectives), gloo for the CPU tensors of our bookkeeping
        # (stats, sample counts, checkpoint agreement): one process group, a backend per device type
        backend = "cpu:gloo,cuda:nccl"
        nccl_error_handling(run)
    else:
        backend = "gloo"
    from datetime import timedelta

    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=timedelta(seconds=run.collective_timeout_s))
    if world > 1 and run.hang_timeout_s > 0:
        store = compat.default_store()
        if store is None:
            log.warning("no rendezvous store to beat on in this torch build: the hung-rank watchdog is off "
                        "(collective timeouts, run.collective_timeout_s, still apply)")
        else:
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # a restarted job must not see old aborts
            watchdog.start(store, rank, world, run.hang_timeout_s, prefix=f"r1mega/heartbeat/{restart}")
    return rank, world


def nccl_error_handling(run: RunConfig) -> None:
    """NCCL's own safety nets, unless the user set them: a failed or timed-out collective tears the
    process down (async error handling) instead of hanging it; the heartbeat monitor aborts a rank
    whose NCCL watchdog thread itself is stuck; the flight recorder dumps the last collectives of
    each rank on a timeout (``TORCH_NCCL_DEBUG_INFO_TEMP_FILE``, default /tmp/nccl_trace_rank_N)."""
    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")  # tear down, skip the (hanging) clean-up
    os.environ.setdefault("TORCH_NCCL_ENABLE_MONITORING", "1")
    if run.hang_timeout_s > 0:
        os.environ.setdefault("TORCH_NCCL_HEARTBEAT_TIMEOUT_SEC", str(int(max(run.hang_timeout_s, 60))))
    os.environ.setdefault("TORCH_NCCL_TRACE_BUFFER_SIZE", "2000")
    os.environ.setdefault("TORCH_NCCL_DUMP_ON_TIMEOUT", "1")


def init_parallel(parallel: ParallelConfig, arch=None, seed: int = 1234, run: RunConfig | None = None) -> Layout:
    """torch.distributed + Megatron's model-parallel groups + the model-parallel RNG seeds.

    ``run``: its collective timeout applies to Megatron's groups too (see :func:`init_distributed`)."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    run = run or RunConfig()
    _, world = init_distributed(run)
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
        distributed_timeout_minutes=run.collective_timeout_s / 60,  # a float is fine: timedelta(minutes=...)
    )
    model_parallel_cuda_manual_seed(seed)
    torch.manual_seed(seed)
    return layout


def destroy_parallel() -> None:
    from megatron.core import parallel_state as ps

    watchdog.stop(done=True)
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
