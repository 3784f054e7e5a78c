"""Worker: save a checkpoint, then SIGKILL this process in the middle of the next save.

    torchrun --nproc-per-node 1 ckpt_kill.py ROOT MODEL_DIR

ROOT/step_000001 is committed; the save of step 2 dies after its model shards are written,
leaving ROOT/step_000002.tmp behind.
"""

import os
import signal
import sys


def main():
    from r1mega.checkpoint import save_checkpoint, training
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel

    root, path = sys.argv[1:]
    layout = init_parallel(ParallelConfig(), read_hf_config(path), seed=3)
    chunks, _ = load_hf(path, ModelConfig(), layout)
    save_checkpoint(root, 1, chunks=chunks, extra={"policy_version": 1})
    real = training.save_sharded

    def save_then_die(sd, directory, **kw):
        real(sd, directory, **kw)
        os.kill(os.getpid(), signal.SIGKILL)

    training.save_sharded = save_then_die
    save_checkpoint(root, 2, chunks=chunks, extra={"policy_version": 2})
    raise AssertionError("unreachable: the save above kills this process")


if __name__ == "__main__":
    main()
