"""Megatron-Core models built from HF configs give the same logits as transformers, at
TP=1 in-process and at TP=2 / PP=2 in real 2-process gloo runs; exports are identical."""

import os

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import FAMILIES, make_hf_model
from tests.numerics import assert_within, logits_bound

WORKER = os.path.join(REPO, "tests", "workers", "hf_parity.py")


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hf"))
    return {f: make_hf_model(f, root, seed=i + 1) for i, f in enumerate(FAMILIES)}


def _check(hf_models, out, families):
    for family in families:
        path, model = hf_models[family]
        ids = torch.load(os.path.join(path, "ids.pt"))
        with torch.no_grad():
            ref = model(ids).logits
        ours = torch.load(os.path.join(out, f"{family}.logits.pt"))
        assert ours.shape == ref.shape
        # two fp32 forwards (Megatron at this layout, transformers): tests/numerics.py, ~4e-4 .. 6e-4 here
        assert_within(ours, ref, logits_bound(model, ids.shape[1]), f"{family} logits")
        exported = type(model).from_pretrained(os.path.join(out, f"{family}.export")).state_dict()
        original = model.state_dict()
        assert set(exported) == set(original), f"{family}: {set(exported) ^ set(original)}"
        for k in original:
            assert torch.equal(exported[k], original[k]), f"{family}: {k} differs after export"


@pytest.mark.multiproc
def test_tp1_logits_and_export(hf_models, tmp_path):
    torchrun(WORKER, str(tmp_path), "1", "1", *[hf_models[f][0] for f in FAMILIES], nproc=1)
    _check(hf_models, tmp_path, FAMILIES)


@pytest.mark.multiproc
def test_tp2_logits_and_export(hf_models, tmp_path):
    fams = ["qwen2", "qwen3"]  # llama here has one KV head: TP=2 is refused (test below)
    torchrun(WORKER, str(tmp_path), "2", "1", *[hf_models[f][0] for f in fams], nproc=2)
    _check(hf_models, tmp_path, fams)


@pytest.mark.multiproc
def test_pp2_logits_and_export(hf_models, tmp_path):
    torchrun(WORKER, str(tmp_path), "1", "2", *[hf_models[f][0] for f in FAMILIES], nproc=2)
    _check(hf_models, tmp_path, FAMILIES)


def test_one_kv_head_refuses_tp2(hf_models):
    from r1mega.config import ConfigError
    from r1mega.config.sections import ParallelConfig
    from r1mega.models.arch import read_hf_config
    from r1mega.parallel.layout import check_layout

    arch = read_hf_config(hf_models["llama"][0])
    with pytest.raises(ConfigError, match=r"num_key_value_heads \(1\) must be a multiple of parallel.tensor \(2\)"):
        check_layout(ParallelConfig(tensor=2), 2, arch)
