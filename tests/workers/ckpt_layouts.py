"""Worker: HF -> r1mega checkpoint at TP=2, then load it at TP=1 (DP=2) and PP=2.

    torchrun --nproc-per-node 2 ckpt_layouts.py OUT_DIR MODEL_DIR [MODEL_DIR ...]

Per model NAME: OUT/NAME.ckpt (saved at TP=2 by hf_to_r1mega), logits of MODEL_DIR/ids.pt
after loading at TP=1 -> OUT/NAME.tp1.logits.pt and at PP=2 -> OUT/NAME.pp2.logits.pt,
an HF export from the TP=1 load -> OUT/NAME.hf/ (r1mega_to_hf), and the message of
loading the checkpoint into a model of another architecture -> OUT/NAME.arch_error.txt.
"""

import os
import sys


def main():
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from r1mega.checkpoint import CheckpointError, hf_to_r1mega, load_checkpoint, load_model_from_checkpoint, \
        r1mega_to_hf
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import build, read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.parallel.init import destroy_parallel, init_parallel

    out, *models = sys.argv[1:]
    for i, path in enumerate(models):
        name = os.path.basename(path.rstrip("/"))
        ckpt = os.path.join(out, f"{name}.ckpt")
        ids = torch.load(os.path.join(path, "ids.pt"))
        hf_to_r1mega(path, ckpt, ParallelConfig(tensor=2))
        for tag, par in (("tp1", ParallelConfig(tensor=1)), ("pp2", ParallelConfig(pipeline=2))):
            arch = read_hf_config(os.path.join(ckpt, "config.json"))
            layout = init_parallel(par, arch, seed=7)
            chunks, arch = load_model_from_checkpoint(ckpt, ModelConfig(), layout)
            logits = full_logits_forward(chunks, ids)
            if logits is not None and ps.get_tensor_model_parallel_rank() == 0 and \
                    ps.get_data_parallel_rank() == 0:
                torch.save(logits, os.path.join(out, f"{name}.{tag}.logits.pt"))
        r1mega_to_hf(ckpt, os.path.join(out, f"{name}.hf"), ParallelConfig(tensor=1))
        # a model of another architecture (the next model, or this one with wider MLP) refuses the checkpoint
        other = read_hf_config(dict(read_hf_config(path).raw, intermediate_size=128))
        layout = init_parallel(ParallelConfig(), other, seed=7)
        try:
            load_checkpoint(ckpt, chunks=build(other, ModelConfig(), layout))
            msg = "no error"
        except CheckpointError as e:
            msg = str(e)
        if dist.get_rank() == 0:
            with open(os.path.join(out, f"{name}.arch_error.txt"), "w") as f:
                f.write(msg)
        dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main()
