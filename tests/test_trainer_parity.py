"""One RL train step (fused kernel loss and the unfused path) and SFT steps (padded, packed)
at TP=2 and PP=2 (real 2-process gloo runs) equal the single-process step: loss, gradient norm
and the updated weights. In the single process: packed SFT == padded SFT, the SFT loss equals
transformers' float64 loss over the loss-carrying response tokens, and random targets at
positions without loss change nothing. The optimizer is SGD, so the weight update is lr x the (clipped) gradient and
equal updates mean equal gradients (Adam would amplify fp32 rounding of near-zero gradients)."""

import os

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import make_hf_model

WORKER = os.path.join(REPO, "tests", "workers", "train_step.py")
pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("step")
    path, _ = make_hf_model("qwen2", str(root), seed=7)  # tied embeddings, odd vocab, QKV bias
    out = root / "tp1"
    out.mkdir()
    torchrun(WORKER, str(out), path, "1", "1", nproc=1)
    return path, torch.load(out / "result.pt")


def _compare(ref, got):
    assert {i for rank in got["rank_layers"] for i in rank} == set(ref["rank_layers"][0])  # every layer, somewhere
    for name in ("fused", "unfused", "sft", "sft_padded", "sft_packed", "sft_garbage"):
        a, b = ref[name], got[name]
        for key in ("loss", "grad_norm", "pg_loss", "clip_frac"):
            if key in a["stats"]:
                assert b["stats"][key] == pytest.approx(a["stats"][key], rel=1e-5, abs=1e-6), (name, key)
        assert set(a["weights"]) == set(b["weights"])
        for k in a["weights"]:
            torch.testing.assert_close(b["weights"][k], a["weights"][k], rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")
    assert ref["fused"]["stats"]["grad_norm"] > 0 and ref["fused"]["stats"]["clip_frac"] > 0


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["tp2", "pp2"])
def test_step_equals_single_process(reference, tmp_path, tp, pp):
    path, ref = reference
    torchrun(WORKER, str(tmp_path), path, str(tp), str(pp), nproc=2)
    _compare(ref, torch.load(tmp_path / "result.pt"))


def test_sft_loss_is_response_only_and_packing_changes_nothing(reference):
    _, ref = reference
    padded = ref["sft_padded"]
    # the loss is transformers' NLL of exactly the loss-carrying response tokens (float64 reference)
    assert padded["stats"]["loss"] == pytest.approx(ref["hf_sft_loss"], rel=1e-5)
    assert padded["stats"]["grad_norm"] > 0
    for other in ("sft_packed", "sft_garbage"):
        got = ref[other]
        for key in ("loss", "grad_norm", "tokens"):
            assert got["stats"][key] == pytest.approx(padded["stats"][key], rel=1e-5, abs=1e-6), (other, key)
        for k in padded["weights"]:
            torch.testing.assert_close(got["weights"][k], padded["weights"][k], rtol=1e-5, atol=1e-6,
                                       msg=f"{other}: {k}")


@pytest.fixture(scope="module")
def deep_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("deep")
    path, _ = make_hf_model("qwen2", str(root), seed=8, num_hidden_layers=4)
    out = root / "tp1"
    out.mkdir()
    torchrun(WORKER, str(out), path, "1", "1", nproc=1)
    return path, torch.load(out / "result.pt")


def test_interleaved_pipeline_equals_single_process(deep_reference, tmp_path):
    """PP=2 with 2 virtual stages per rank (interleaved 1F1B): layers 0,2 on rank 0 and 1,3 on rank 1."""
    path, ref = deep_reference
    torchrun(WORKER, str(tmp_path), path, "1", "2", "parallel.virtual_pipeline=2", nproc=2)
    got = torch.load(tmp_path / "result.pt")
    assert got["rank_layers"] == [[0, 2], [1, 3]]
    _compare(ref, got)


def test_uneven_pipeline_split_equals_single_process(deep_reference, tmp_path):
    """PP=2 with 1 layer on the first stage and 3 on the last (parallel.first_stage_layers=1)."""
    path, ref = deep_reference
    torchrun(WORKER, str(tmp_path), path, "1", "2", "parallel.first_stage_layers=1", nproc=2)
    got = torch.load(tmp_path / "result.pt")
    assert got["rank_layers"] == [[0], [1, 2, 3]]
    _compare(ref, got)
