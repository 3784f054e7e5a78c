"""MoE training steps under expert parallelism equal the single-process step.

Qwen2-MoE (gated shared expert, raw softmax weights, load-balancing aux loss 0.02) and
DeepSeek-V3 (MLA, sigmoid group-limited routing whose aux-loss-free bias Megatron updates after
every step from the global expert loads) trained with ``r1mega.trainer.policy.Policy`` for two
RL steps (SGD, so equal updates mean equal gradients, the aux loss's included): in real
2-process gloo runs at EP=2 (attention DP 2) and at TP=2 + SP with EP=2 (expert TP 1), loss,
gradient norm, every updated weight (gathered by ``iter_hf_weights``, the routing bias
included) and the router statistics of ``moe_router_stats`` equal the
single-process run's. Every layout trains on the same micro-batches; under DP each rank takes
every other one (an equal count per rank, so Megatron's per-micro-batch aux loss is averaged
the same way). Micro-batches are padded to an even length (sequence parallelism splits it).

This file is also the torchrun worker:

    torchrun --nproc-per-node N tests/test_moe_training.py OUT LAYOUTS HF_DIR [HF_DIR ...]

LAYOUTS is a comma list of ``tp.ep.etp.sp`` (sp 0/1); rank 0 writes OUT/<name>.<LAYOUT>.pt.
"""

import os
import sys

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import make_hf_model
from tests.numerics import (EPS32, assert_within, logit_cap, logprob_bound, scale, sgd_weights_bound,
                            transformer_rel)

SELF = os.path.join(REPO, "tests", "test_moe_training.py")
REFERENCE = "1.1.1.0"
LAYOUTS = {"ep2": "1.2.1.0", "tp2ep2": "2.2.1.1"}
FAMILIES = ("qwen2_moe", "deepseek_v3")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe_step")
    paths = [make_hf_model(f, str(root), seed=5)[0] for f in FAMILIES]
    from r1mega.parallel.init import destroy_parallel
    try:  # the single-process reference: a world of one, in this process
        for path in paths:
            run_layout(str(root), path, REFERENCE)
    finally:
        destroy_parallel()
    torchrun(SELF, str(root), ",".join(LAYOUTS.values()), *paths, nproc=2, timeout=400)
    return {(f, name): torch.load(root / f"{f}.{spec}.pt")
            for f in FAMILIES for name, spec in [("ref", REFERENCE), *LAYOUTS.items()]}


# Tolerances (tests/numerics.py: fp32 eps x the longest reduction K x the chained depth D). Hidden 64, ffn 96,
# <= 8 sequences of <= 16 tokens (<= 128 a step); K = the vocabulary (softmax; its backward into dX).
# Depth per layer: 9 + 3 for the MoE block (router, top-k weights' normalisation, the experts' weighted sum),
# + 5 more for DeepSeek-V3's MLA (q_a, q_a norm, q_b, kv_a, kv_a norm, kv_b instead of one QKV projection).
SHAPE = dict(hidden=64, ffn=96, seq=16, tokens=128)
MODEL = {"qwen2_moe": dict(layers=2, extra_per_layer=3, vocab=211),
         "deepseek_v3": dict(layers=4, extra_per_layer=8, vocab=199)}
CLIP_HIGH = 0.28  # run_layout's algorithm.clip_high


@pytest.mark.multiproc
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_steps_equal_single_process(runs, family, layout):
    ref, got = runs[family, "ref"], runs[family, layout]
    assert len(ref["steps"]) == len(got["steps"]) == 2
    fwd, step = transformer_rel(**SHAPE, **MODEL[family])
    vocab = MODEL[family]["vocab"]
    n_params = sum(v.numel() for v in ref["initial"].values())
    norm_rel = n_params * EPS32 / 2  # the gradient norm's sum of squares (and the clip factor it gives)
    a_max = max(abs(s.advantage) for s in samples(vocab))
    for i, (a, b) in enumerate(zip(ref["steps"], got["steps"])):
        at = ref["initial"] if i == 0 else ref["steps"][i - 1]["weights"]  # the weights step i's stats were taken at
        # step 2 runs at weights one step apart: a (step + norm_rel) fraction of the update (see
        # tests/test_trainer_parity.py)
        rel = fwd + (step + norm_rel if i else 0.0)
        lp = logprob_bound(rel, logit_cap(at), vocab)
        # the RL loss: d(token loss)/d logp = |A| x ratio <= max|A| (1 + clip_high); qwen2_moe adds the aux loss
        aux = a["router"].get("moe/load_balancing_loss", 0.0)
        for key, allowed in (("loss", lp * a_max * (1 + CLIP_HIGH) + rel * aux), ("pg_loss", lp * a_max * (1 + CLIP_HIGH)),
                             ("grad_norm", ((2 ** (i + 1) - 1) * step + norm_rel) * a["stats"]["grad_norm"])):
            assert_within(b["stats"][key], a["stats"][key], allowed, f"step {i} {key}")
        assert b["stats"]["clip_frac"] == a["stats"]["clip_frac"], i  # a count: no ratio within rounding of a clip bound
        assert set(a["router"]) == set(b["router"])
        assert ("moe/load_balancing_loss" in a["router"]) == (family == "qwen2_moe")  # DeepSeek-V3: aux-loss-free
        for key in a["router"]:
            if key == "moe/load_balancing_loss":  # E sum_i f_i P_i: P (mean router probabilities) at forward rounding
                assert_within(b["router"][key], a["router"][key], rel * a["router"][key], f"step {i} {key}")
            else:  # token counts per expert (routers scaled x25 in tests/hf_models.py: no near-ties): exact
                assert b["router"][key] == a["router"][key], (i, key)
        assert set(a["weights"]) == set(b["weights"])
        for k in a["weights"]:
            assert_within(b["weights"][k], a["weights"][k],
                          sgd_weights_bound(a["weights"][k], ref["initial"][k], step + norm_rel, steps=i + 1),
                          f"step {i}: {k}")


@pytest.mark.multiproc
@pytest.mark.parametrize("family", FAMILIES)
def test_reference_really_trains_the_experts_and_router(runs, family):
    """The comparison above is not vacuous: every routed expert, the router, the shared expert
    (and its gate) and DeepSeek-V3's routing bias moved; the router statistics are real."""
    ref = runs[family, "ref"]
    before, after = ref["initial"], ref["steps"][-1]["weights"]
    for k in before:
        if ".mlp." in k:
            assert not torch.equal(before[k], after[k]), f"{k} did not change"
    E = 4 if family == "qwen2_moe" else 8
    r = ref["steps"][0]["router"]
    if family == "qwen2_moe":
        assert 1.0 <= r["moe/load_balancing_loss"] < E  # E * sum f_i P_i: 1 when balanced, <= E
    else:  # the bias moves by exactly +-moe_router_bias_update_rate (1e-3) per step, per expert
        bias = [k for k in before if k.endswith("e_score_correction_bias")]
        # |fl(b + 1e-3) - b - 1e-3| <= eps (|b| + 1e-3) (the add's rounding) + eps 1e-3 (1e-3 in fp32, the subtraction)
        assert bias
        for k in bias:
            d = (ref["steps"][0]["weights"][k] - before[k]).abs()
            assert_within(d[d > 0], torch.full_like(d[d > 0], 1e-3), EPS32 * (scale(before[k]) + 2e-3), k)
    assert 0.0 <= r["moe/min_load"] <= 1 / E <= r["moe/max_load"] <= 1.0
    assert r["moe/tokens_dropped"] == 0.0
    assert r["moe/imbalance"] == pytest.approx(E * r["moe/max_load"])
    moe_layers = sorted(int(k.split("/")[1][5:]) for k in r if k.startswith("moe/layer") and k.endswith("/max_load"))
    assert moe_layers
    for s in ref["steps"]:  # per layer: max_i load_i / mean_i load_i; the summary is the worst layer
        q = s["router"]
        for L in moe_layers:
            assert q[f"moe/layer{L}/imbalance"] == pytest.approx(E * q[f"moe/layer{L}/max_load"])
            assert 1.0 <= q[f"moe/layer{L}/imbalance"] <= E
        assert q["moe/imbalance"] == max(q[f"moe/layer{L}/imbalance"] for L in moe_layers)
    assert ("moe/bias_drift" in r) == (family == "deepseek_v3")  # only routers with an expert bias
    if family == "deepseek_v3":  # the drift / step against the trained weights: mean_e |b - b0|, mean_e |b - b_prev|
        prev = before
        for i, s in enumerate(ref["steps"]):
            q, w = s["router"], s["weights"]
            for L in moe_layers:
                k = f"model.layers.{L}.mlp.gate.e_score_correction_bias"
                drift, moved = q[f"moe/layer{L}/bias_drift"], q[f"moe/layer{L}/bias_step"]
                assert torch.tensor([drift, moved]).isfinite().all() and drift >= 0 and moved >= 0, (i, L)
                b = w[k].double()
                assert drift == pytest.approx(float((b - before[k].double()).abs().mean()), abs=1e-12), (i, L)
                assert moved == pytest.approx(float((b - prev[k].double()).abs().mean()), abs=1e-12), (i, L)
            assert q["moe/bias_drift"] == max(q[f"moe/layer{L}/bias_drift"] for L in moe_layers)
            assert q["moe/bias_step"] == max(q[f"moe/layer{L}/bias_step"] for L in moe_layers)
            # Megatron's default moe_router_bias_update_rate (1e-3; megatron_moe_kwargs keeps it) moves
            # every expert whose load is off the mean: the bias moved in this step and since the start
            assert q["moe/bias_step"] > 0 and q["moe/bias_drift"] > 0, i
            prev = w


# --------------------------------------------------------------------------- worker
def samples(vocab):
    from r1mega.types import Sample

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(8):
        P, R = int(torch.randint(2, 7, (1,), generator=g)), int(torch.randint(1, 10, (1,), generator=g))
        ids = torch.randint(0, vocab, (P + R,), generator=g).tolist()
        out.append(Sample(prompt_ids=ids[:P], response_ids=ids[P:], group_id=i // 4,
                          rollout_logprobs=(-torch.rand(R, generator=g) * 3).tolist(),
                          advantage=float(torch.randn(1, generator=g))))
    return out


def run_layout(out, hf, spec):
    name = os.path.basename(hf.rstrip("/"))
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from r1mega.config import load_config
    from r1mega.models import iter_hf_weights, load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.batch import pack
    from r1mega.trainer.policy import Policy, _pad_to
    from r1mega.trainer.samples import denominator

    tp, ep, etp, sp = (int(x) for x in spec.split("."))
    cfg = load_config(None, [f"parallel.tensor={tp}", f"parallel.expert={ep}", f"parallel.expert_tensor={etp}",
                             f"parallel.sequence_parallel={bool(sp)}", "parallel.distributed_optimizer=false",
                             "optimizer.name=sgd", "optimizer.lr=0.5", "trainer.micro_batch_tokens=48",
                             "trainer.packing=padded", "algorithm.clip_high=0.28"])
    arch = read_hf_config(hf)
    layout = init_parallel(cfg.parallel, arch, seed=1)
    chunks, arch = load_hf(hf, cfg.model, layout)
    initial = {k: v.clone() for k, v in iter_hf_weights(chunks, arch)}
    policy = Policy(cfg, layout, arch, chunks)
    ss = samples(arch.vocab_size)
    mbs = pack(ss, cfg.trainer.micro_batch_tokens, multiple_of=2)
    mbs = [_pad_to(mb, mb.tokens.shape[0], mb.tokens.shape[1] + mb.tokens.shape[1] % 2) for mb in mbs]
    assert len(mbs) % 2 == 0, f"{len(mbs)} micro-batches: the DP=2 runs need an even count"
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    mine = mbs[dp_rank::dp]
    steps = []
    for step in range(2):
        policy.logprobs(mine, "old")
        for mb in mine:  # a second epoch's ratio: perturb old logprobs so clipping happens
            mb.old_logp = mb.old_logp + 0.3 * torch.sin(torch.arange(mb.num_scored, dtype=torch.float32) + step)
        stats = policy.train_step(mine, denominator(ss, cfg.algorithm.loss_agg, 9), 9)
        router = {k: v for k, v in stats.items() if k.startswith("moe/")}  # the policy's moe_router_stats
        weights = {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}
        steps.append({"stats": stats, "router": router, "weights": weights})
    if dist.get_rank() == 0:
        torch.save({"initial": initial, "steps": steps}, os.path.join(out, f"{name}.{spec}.pt"))


def main():
    out, layouts, *models = sys.argv[1:]
    for spec in layouts.split(","):
        for hf in models:
            run_layout(out, hf, spec)
    from r1mega.parallel.init import destroy_parallel
    destroy_parallel()


if __name__ == "__main__":
    main()
