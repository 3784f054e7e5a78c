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
from tests.numerics import EPS32, assert_within, logit_cap, logprob_bound, sgd_weights_bound, transformer_rel

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


# Tolerances (tests/numerics.py: fp32 eps x the longest reduction K x the chained depth D). The models:
# qwen2, hidden 64, ffn 96, vocab 257, 2 (or 4) layers; <= 8 sequences of <= 16 tokens, <= 128 tokens a step.
# K = 257 (the softmax over the vocabulary; its backward sums 257 signed terms into each dX);
# D = 9 L + 3 forward, twice that for a step: L = 2: 6.4e-4 / 1.3e-3; L = 4: 1.2e-3 / 2.4e-3.
SHAPE = dict(hidden=64, ffn=96, seq=16, vocab=257, tokens=128)
STEPS = {"fused": 1, "unfused": 1, "recompute": 1, "on_policy": 1, "rollout_is": 1, "sft": 2, "sft_padded": 1,
         "sft_packed": 1, "sft_garbage": 1}  # "sft" follows "fused"
WORKER_DEFAULTS = {"clip_high": 0.28}  # train_step.py's RL config (unfused adds tis_cap=1.5)


def _advantage_max(vocab):
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_step_worker", WORKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return max(abs(s.advantage) for s in mod.samples(vocab))


def _compare(ref, got, layers):
    assert {i for rank in got["rank_layers"] for i in rank} == set(ref["rank_layers"][0])  # every layer, somewhere
    fwd, step = transformer_rel(layers=layers, **SHAPE)
    n_params = sum(v.numel() for v in ref["initial"].values())
    norm_rel = n_params * EPS32 / 2  # the gradient norm's sum of squares over every parameter (and the clip factor)
    a_max = _advantage_max(SHAPE["vocab"])
    for name, n in STEPS.items():
        a, b = ref[name], got[name]
        at = ref["fused"]["weights"] if name == "sft" else ref["initial"]  # the weights the stats were taken at
        # logprobs: the forward's rounding at equal weights; at weights one step apart ("sft") also the
        # weights' difference, a (step + norm_rel) fraction of the update, which moves a logit by as much
        lp = logprob_bound(fwd + (step + norm_rel if name == "sft" else 0.0), logit_cap(at), SHAPE["vocab"])
        # d(token loss)/d logp: 1 for SFT (the NLL); |A| x ratio <= max|A| (1 + clip_high) (x tis_cap, unfused) for RL
        g = 1.0 if name.startswith("sft") else a_max * (1 + WORKER_DEFAULTS["clip_high"]) * (1.5 if name == "unfused" else 1)
        for key, allowed in (("loss", lp * g), ("pg_loss", lp * g),
                             ("grad_norm", ((2 ** n - 1) * step + norm_rel) * abs(a["stats"]["grad_norm"]))):
            if key in a["stats"]:
                assert_within(b["stats"][key], a["stats"][key], allowed, f"{name} {key}")
        if "is_masked_frac" in a["stats"]:  # the same sequences dropped; the mean over micro-batches rounds
            assert b["stats"]["is_masked_frac"] == pytest.approx(a["stats"]["is_masked_frac"], rel=1e-6), name
        for key in ("clip_frac", "tokens"):  # counts: exact (no ratio within rounding of a clip boundary)
            if key in a["stats"]:
                assert b["stats"][key] == a["stats"][key], (name, key)
        assert set(a["weights"]) == set(b["weights"])
        for k in a["weights"]:  # SGD with clipping: the update also carries the norm's rounding
            assert_within(b["weights"][k], a["weights"][k],
                          sgd_weights_bound(a["weights"][k], ref["initial"][k], step + norm_rel, steps=n),
                          f"{name}: {k}")
    assert ref["fused"]["stats"]["grad_norm"] > 0 and ref["fused"]["stats"]["clip_frac"] > 0
    assert 0 < ref["rollout_is"]["stats"]["is_masked_frac"] < 1, ref["rollout_is"]["stats"]  # some dropped, some kept


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)], ids=["tp2", "pp2"])
def test_step_equals_single_process(reference, tmp_path, tp, pp):
    path, ref = reference
    torchrun(WORKER, str(tmp_path), path, str(tp), str(pp), nproc=2)
    _compare(ref, torch.load(tmp_path / "result.pt"), layers=2)


def test_one_update_per_batch_needs_no_old_logprob_pass(reference):
    """trainer.old_logprobs current (auto's choice with one update per batch) skips the forward pass
    of the old policy: the loss takes the trained policy's own logprobs, detached. The step equals
    the one whose old logprobs were recomputed first (ratio 1, nothing clipped)."""
    _, ref = reference
    a, b = ref["recompute"], ref["on_policy"]
    fwd, step = transformer_rel(layers=2, **SHAPE)
    n_params = sum(v.numel() for v in ref["initial"].values())
    lp = logprob_bound(fwd, logit_cap(ref["initial"]), SHAPE["vocab"])
    g = _advantage_max(SHAPE["vocab"]) * (1 + WORKER_DEFAULTS["clip_high"])
    for key in ("loss", "pg_loss"):
        assert_within(b["stats"][key], a["stats"][key], lp * g, key)
    assert b["stats"]["clip_frac"] == 0.0 and b["stats"]["ratio_mean"] == 1.0, b["stats"]
    for k in a["weights"]:
        assert_within(b["weights"][k], a["weights"][k],
                      sgd_weights_bound(a["weights"][k], ref["initial"][k], step + n_params * EPS32 / 2), k)
    assert any(not torch.equal(b["weights"][k], ref["initial"][k]) for k in a["weights"])  # it did train


def test_sft_loss_is_response_only_and_packing_changes_nothing(reference):
    _, ref = reference
    padded = ref["sft_padded"]
    fwd, step = transformer_rel(layers=2, **SHAPE)
    lp = logprob_bound(fwd, logit_cap(ref["initial"]), SHAPE["vocab"])
    # the loss is transformers' NLL of exactly the loss-carrying response tokens (float64 reference): the
    # fp32 loss is a mean of logprobs, each within lp of the exact value
    assert_within(padded["stats"]["loss"], ref["hf_sft_loss"], lp, "SFT loss vs float64 HF")
    assert padded["stats"]["grad_norm"] > 0
    # random targets where the mask is 0: multiplied by zero, the same arithmetic otherwise: exact
    garbage = ref["sft_garbage"]
    assert garbage["stats"] == padded["stats"]
    for k in padded["weights"]:
        assert torch.equal(garbage["weights"][k], padded["weights"][k]), k
    # packed rows: other shapes and attention masks, the same math (bounds as in _compare)
    got = ref["sft_packed"]
    n_params = sum(v.numel() for v in ref["initial"].values())
    assert got["stats"]["tokens"] == padded["stats"]["tokens"]
    assert_within(got["stats"]["loss"], padded["stats"]["loss"], lp, "packed loss")
    assert_within(got["stats"]["grad_norm"], padded["stats"]["grad_norm"],
                  (step + n_params * EPS32 / 2) * padded["stats"]["grad_norm"], "packed grad_norm")
    for k in padded["weights"]:
        assert_within(got["weights"][k], padded["weights"][k],
                      sgd_weights_bound(padded["weights"][k], ref["initial"][k], step + n_params * EPS32 / 2),
                      f"packed: {k}")


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
    _compare(ref, got, layers=4)


def test_uneven_pipeline_split_equals_single_process(deep_reference, tmp_path):
    """PP=2 with 1 layer on the first stage and 3 on the last (parallel.first_stage_layers=1)."""
    path, ref = deep_reference
    torchrun(WORKER, str(tmp_path), path, "1", "2", "parallel.first_stage_layers=1", nproc=2)
    got = torch.load(tmp_path / "result.pt")
    assert got["rank_layers"] == [[0], [1, 2, 3]]
    _compare(ref, got, layers=4)
