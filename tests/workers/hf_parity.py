"""Worker: load HF model(s) at a TP/PP layout, write last-stage logits and an HF export.

    torchrun --nproc-per-node 2 hf_parity.py OUT_DIR TP PP MODEL_DIR [MODEL_DIR ...]

For each model directory: logits of the ids in MODEL_DIR/ids.pt -> OUT_DIR/<name>.logits.pt
(written by the last pipeline stage's TP rank 0), and an export to OUT_DIR/<name>.export/.
"""

import os
import sys

import torch
import torch.distributed as dist

from r1mega.config.sections import ModelConfig, ParallelConfig
from r1mega.models import export_hf, load_hf, read_hf_config
from r1mega.models.forward import full_logits_forward
from r1mega.parallel.init import destroy_parallel, init_parallel


def main():
    out, tp, pp, *models = sys.argv[1:]
    parallel = ParallelConfig(tensor=int(tp), pipeline=int(pp))
    for path in models:
        name = os.path.basename(path.rstrip("/"))
        arch = read_hf_config(path)
        layout = init_parallel(parallel, arch, seed=1)
        chunks, arch = load_hf(path, ModelConfig(), layout)
        ids = torch.load(os.path.join(path, "ids.pt"))
        logits = full_logits_forward(chunks, ids)
        from megatron.core import parallel_state as ps
        if logits is not None and ps.get_tensor_model_parallel_rank() == 0:
            torch.save(logits, os.path.join(out, f"{name}.logits.pt"))
        export_hf(chunks, arch, os.path.join(out, f"{name}.export"))
        dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main()
