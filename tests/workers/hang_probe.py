"""Worker: a collective that one rank never joins must fail on time and say where every rank is.

    torchrun --nproc-per-node 2 hang_probe.py OUT_JSON

Megatron's tensor-parallel group (TP=2) with run.collective_timeout_s=3: rank 1 reports stage
'reward' at step 3 and sleeps in Python (its heartbeat goes on: the process is alive, only late),
rank 0 reports 'train' at step 3 and all-reduces over the TP group. Rank 0 writes what it saw
(seconds to the error, the explained message) to OUT_JSON.
"""

import json
import os
import sys
import time

import torch


def main():
    out = sys.argv[1]
    from megatron.core import parallel_state as ps

    from r1mega.config.sections import ParallelConfig, RunConfig
    from r1mega.parallel import watchdog
    from r1mega.parallel.init import init_parallel

    init_parallel(ParallelConfig(tensor=2), seed=1, run=RunConfig(collective_timeout_s=3.0, hang_timeout_s=60.0))
    rank = torch.distributed.get_rank()
    torch.distributed.barrier()
    if rank == 1:
        watchdog.report("reward", 3)
        time.sleep(6)
        return
    watchdog.report("train", 3)
    time.sleep(1.0)  # rank 1's heartbeat now says 'reward'
    t0 = time.monotonic()
    try:
        torch.distributed.all_reduce(torch.ones(4), group=ps.get_tensor_model_parallel_group())
        result = {"error": None}
    except RuntimeError as e:
        result = {"seconds": time.monotonic() - t0, "timeout": watchdog.is_collective_timeout(e),
                  "message": watchdog.explain_timeout(e, rank)}
    with open(out, "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    os._exit(0)  # the group is broken: no clean-up that waits on rank 1


if __name__ == "__main__":
    main()
