"""Model checkpoints in Megatron's distributed format: saved at TP=2 (2 gloo processes) by
``hf_to_r1mega``, loaded at TP=1 and PP=2 they give the HF model's logits; exported back
with ``r1mega_to_hf`` the tensors are identical to the original (the ``r1mega convert``
round trip); loading into a model of another architecture names the differing field."""

import json
import os

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import make_hf_model
from tests.numerics import assert_within, logits_bound

WORKER = os.path.join(REPO, "tests", "workers", "ckpt_layouts.py")
FAMILIES = ("qwen2", "qwen3")  # tied + QKV bias + padded vocab at TP=2; untied + QK-norm


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hf"))
    models = {f: make_hf_model(f, root, seed=i + 11) for i, f in enumerate(FAMILIES)}
    out = str(tmp_path_factory.mktemp("out"))
    torchrun(WORKER, out, *[models[f][0] for f in FAMILIES], nproc=2, timeout=240)
    return models, out


@pytest.mark.multiproc
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", ["tp1", "pp2"])
def test_saved_at_tp2_loads_at_other_layouts(run, family, layout):
    models, out = run
    path, model = models[family]
    ids = torch.load(os.path.join(path, "ids.pt"))
    with torch.no_grad():
        ref = model(ids).logits
    ours = torch.load(os.path.join(out, f"{family}.{layout}.logits.pt"))
    assert ours.shape == ref.shape
    # two fp32 forwards (Megatron at this layout, transformers): tests/numerics.py, ~4e-4 .. 6e-4 here
    assert_within(ours, ref, logits_bound(model, ids.shape[1]), f"{family} saved at TP=2, loaded at {layout}")


@pytest.mark.multiproc
@pytest.mark.parametrize("family", FAMILIES)
def test_convert_round_trip_is_exact(run, family):
    models, out = run
    path, model = models[family]
    ckpt = os.path.join(out, f"{family}.ckpt")
    for name in ("COMPLETE", "meta.json", "config.json", "generation_config.json", "model/metadata.json"):
        assert os.path.isfile(os.path.join(ckpt, name)), name
    meta = json.load(open(os.path.join(ckpt, "meta.json")))
    assert meta["layout"]["tensor"] == 2 and not meta["has_optimizer"]
    exported = type(model).from_pretrained(os.path.join(out, f"{family}.hf")).state_dict()
    original = model.state_dict()
    assert set(exported) == set(original), set(exported) ^ set(original)
    for k in original:
        assert torch.equal(exported[k], original[k]), f"{family}: {k} differs after HF -> r1mega -> HF"


@pytest.mark.multiproc
@pytest.mark.parametrize("family", FAMILIES)
def test_arch_mismatch_is_named(run, family):
    _, out = run
    msg = open(os.path.join(out, f"{family}.arch_error.txt")).read()
    assert "different model architecture" in msg and "ffn_hidden_size: checkpoint 96 vs model 128" in msg, msg
