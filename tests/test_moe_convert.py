"""Layout-changing conversion of MoE checkpoints (Megatron distributed checkpoints, global expert
keys): a Qwen3-MoE (and a DeepSeek-V3: MLA, routing-bias buffer) saved by ``hf_to_r1mega`` at
TP=2 + SP (experts split over expert TP 2, EP 1)
loads at EP=2 (4 whole experts per rank) with the HF model's logits, and ``r1mega_to_hf`` at EP=2
gives tensors identical to the original; the other way round, saved at EP=2 and loaded at
TP=2 + SP, likewise; and ``reshard`` (what ``r1mega convert reshard`` runs) rewrites the TP=2
checkpoint at EP=2, exported back at TP=2 identical. Real 2-process gloo runs.

This file is also the torchrun worker:

    torchrun --nproc-per-node 2 tests/test_moe_convert.py OUT MODEL_DIR [MODEL_DIR ...]
"""

import os
import sys

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import make_hf_model
from tests.numerics import assert_within, logits_bound

SELF = os.path.join(REPO, "tests", "test_moe_convert.py")
CASES = ("tp2_to_ep2", "ep2_to_tp2", "resharded_to_tp2")
FAMILIES = ("qwen3_moe", "deepseek_v3")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_convert")
    models = {f: make_hf_model(f, str(root), seed=23) for f in FAMILIES}
    for path, model in models.values():
        ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(3))
        torch.save(ids, os.path.join(path, "moe_ids.pt"))
    out = root / "out"
    out.mkdir()
    torchrun(SELF, str(out), *[p for p, _ in models.values()], nproc=2, timeout=400)
    return models, out


@pytest.mark.multiproc
@pytest.mark.parametrize("family,case", [(f, c) for f in FAMILIES for c in (CASES if f == "qwen3_moe" else CASES[:1])])
def test_checkpoint_loads_at_another_expert_layout(run, case, family):
    models, out = run
    (path, model), out = models[family], out / family
    ids = torch.load(os.path.join(path, "moe_ids.pt"))
    with torch.no_grad():
        ref = model(ids).logits
    ours = torch.load(out / f"{case}.logits.pt")
    # two fp32 forwards (Megatron at this layout, transformers): tests/numerics.py, ~1e-3 .. 2e-3 here
    assert_within(ours, ref, logits_bound(model, ids.shape[1]), f"{family} {case} logits")
    exported = type(model).from_pretrained(out / f"{case}.hf").state_dict()
    original = model.state_dict()
    assert set(exported) == set(original), set(exported) ^ set(original)
    for k in original:
        assert torch.equal(exported[k], original[k]), f"{case}: {k} differs after HF -> r1mega -> HF"


@pytest.mark.multiproc
def test_checkpoint_records_the_saving_layout(run):
    import json

    out = run[1] / "qwen3_moe"
    tp2 = json.load(open(out / "tp2.ckpt" / "meta.json"))["layout"]
    ep2 = json.load(open(out / "ep2.ckpt" / "meta.json"))["layout"]
    assert (tp2["tensor"], tp2["expert"], tp2["expert_tensor"]) == (2, 1, 2)
    assert (ep2["tensor"], ep2["expert"], ep2["expert_tensor"]) == (1, 2, 1)
    resharded = json.load(open(out / "resharded.ckpt" / "meta.json"))["layout"]
    assert (resharded["tensor"], resharded["expert"], resharded["expert_tensor"]) == (1, 2, 1)


# --------------------------------------------------------------------------- worker
def main():
    from r1mega.parallel.init import destroy_parallel

    root, *paths = sys.argv[1:]
    for path in paths:
        out = os.path.join(root, os.path.basename(path.rstrip("/")))
        os.makedirs(out, exist_ok=True)
        convert_cases(out, path)
    destroy_parallel()


def convert_cases(out, path):
    from megatron.core import parallel_state as ps

    from r1mega.checkpoint import hf_to_r1mega, load_model_from_checkpoint, r1mega_to_hf
    from r1mega.checkpoint.convert import reshard
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.parallel.init import init_parallel

    tp2 = ParallelConfig(tensor=2, sequence_parallel=True)   # expert TP 2, EP 1
    ep2 = ParallelConfig(expert=2)                           # attention DP 2, EP 2, expert TP 1
    ids = torch.load(os.path.join(path, "moe_ids.pt"))
    cases = (("tp2_to_ep2", tp2, ep2), ("ep2_to_tp2", ep2, tp2), ("resharded_to_tp2", ep2, tp2))
    if "deepseek" in path:  # MLA + routing-bias buffer through a checkpoint: one layout change is enough
        cases = cases[:1]
    for case, save, load in cases:
        ckpt = os.path.join(out, f"{case.split('_')[0]}.ckpt")
        if case == "resharded_to_tp2":
            reshard(os.path.join(out, "tp2.ckpt"), ckpt, save)
        else:
            hf_to_r1mega(path, ckpt, save)
        arch = read_hf_config(os.path.join(ckpt, "config.json"))
        layout = init_parallel(load, arch, seed=7)
        chunks, arch = load_model_from_checkpoint(ckpt, ModelConfig(), layout)
        logits = full_logits_forward(chunks, ids)
        if logits is not None and ps.get_tensor_model_parallel_rank() == 0 and ps.get_data_parallel_rank() == 0:
            torch.save(logits, os.path.join(out, f"{case}.logits.pt"))
        r1mega_to_hf(ckpt, os.path.join(out, f"{case}.hf"), load)


if __name__ == "__main__":
    main()
