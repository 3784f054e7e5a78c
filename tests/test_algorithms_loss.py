"""Policy loss, KL estimators, aggregation and TIS against hand-computed values and gradcheck."""

from __future__ import annotations

import math

import pytest
import torch

from r1mega.algorithms import (AGGREGATIONS, AlgorithmConfig, aggregate, clipped_pg_loss, kl_in_reward, kl_penalty,
                               normalizer, policy_loss, tis_weights)
from r1mega.config.base import ConfigError

f64 = torch.float64


def t(x):
    return torch.tensor(x, dtype=f64)


# ------------------------------------------------------------------ clipped surrogate

def test_clipped_pg_loss_by_hand():
    # per token: (log ratio, advantage)
    d = [0.5, -0.5, -0.5, 0.5, 0.1]
    adv = [1.0, 1.0, -1.0, -1.0, 2.0]
    old = t([[-1.0] * 5])
    logp = (old + t([d])).requires_grad_()
    loss, clipped, dual = clipped_pg_loss(logp, old, t([adv]), clip_low=0.2, clip_high=0.28)
    e = math.exp
    expected = [-1.28,            # A>0, ratio 1.65 > 1.28: clipped at 1 + clip_high
                -e(-0.5),         # A>0, ratio 0.61 < 0.8: unclipped (pessimistic branch)
                0.8,              # A<0, ratio 0.61: clipped at 1 - clip_low
                e(0.5),           # A<0, ratio 1.65: unclipped
                -2 * e(0.1)]      # inside the trust region
    torch.testing.assert_close(loss, t([expected]))
    assert clipped.tolist() == [[True, False, True, False, False]]
    assert not dual.any()
    loss.sum().backward()
    # d/dlogp of -A * exp(logp - old) is -A * ratio where unclipped, 0 where clipped
    torch.testing.assert_close(logp.grad, t([[0.0, -e(-0.5), 0.0, e(0.5), -2 * e(0.1)]]))


def test_dual_clip_by_hand():
    old = t([[0.0, 0.0, 0.0]])
    logp = t([[1.0, 0.2, 1.0]]).requires_grad_()
    adv = t([[-1.0, -1.0, 1.0]])
    loss, _, dual = clipped_pg_loss(logp, old, adv, 0.2, 0.2, dual_clip=2.0)
    # ratio e = 2.72 with A=-1: loss min(e, 2 * 1) = 2; ratio 1.22 with A=-1: 1.22 < 2 unchanged; A>0 untouched
    torch.testing.assert_close(loss, t([[2.0, math.exp(0.2), -1.2]]))
    assert dual.tolist() == [[True, False, False]]
    loss.sum().backward()
    torch.testing.assert_close(logp.grad, t([[0.0, math.exp(0.2), 0.0]]))


# ------------------------------------------------------------------ KL

def test_kl_estimators_by_hand():
    logp, ref = t([-1.0, -2.0]), t([-1.5, -1.0])
    l = logp - ref                                                # [0.5, -1]
    torch.testing.assert_close(kl_penalty("k1", logp, ref), l)
    torch.testing.assert_close(kl_penalty("k2", logp, ref), t([0.125, 0.5]))
    torch.testing.assert_close(kl_penalty("k3", logp, ref), t([math.exp(-0.5) + 0.5 - 1, math.exp(1) - 1 - 1]))
    x = logp.clone().requires_grad_()
    kl_penalty("k3", x, ref).sum().backward()
    torch.testing.assert_close(x.grad, 1 - torch.exp(ref - logp))   # dk3/dlogp = 1 - pi_ref / pi


def test_k1_k3_unbiased_k2_biased_exact_expectation():
    p = torch.softmax(t([0.3, -1.2, 2.0, 0.1, -0.4]), 0)
    q = torch.softmax(t([1.0, 0.2, -0.5, 0.3, 0.0]), 0)
    true_kl = float((p * (p.log() - q.log())).sum())
    for name, unbiased in (("k1", True), ("k3", True), ("k2", False)):
        est = float((p * kl_penalty(name, p.log(), q.log())).sum())   # E_{x ~ p}[k(x)]
        # float64 sums of 5 terms of O(1): rounding ~ 5 x 3 x eps64 = 3e-15 << 1e-12 << k2's bias (~0.1)
        assert (abs(est - true_kl) < 1e-12) == unbiased, name
    assert (kl_penalty("k3", p.log(), q.log()) >= 0).all()


def test_kl_in_reward_by_hand():
    logp = t([[-1.0, -2.0, -9.0]])
    ref = t([[-1.5, -1.0, 0.0]])
    mask = t([[1, 1, 0]])
    new, per_seq = kl_in_reward(t([1.0]), logp, ref, mask, kl_coef=0.1, estimator="k1")
    torch.testing.assert_close(per_seq, t([0.5 - 1.0]))
    torch.testing.assert_close(new, t([1.0 + 0.05]))


def test_unknown_kl_name():
    with pytest.raises(ConfigError, match="k1, k2, k3"):
        kl_penalty("k4", t([0.0]), t([0.0]))


# ------------------------------------------------------------------ aggregation

LOSS = t([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])   # 9 = garbage under the mask
MASK = t([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])                           # row 2: filtered out


@pytest.mark.parametrize("name,expected", [
    ("token_mean", (1 + 2 + 3 + 4) / 4),
    ("seq_mean_token_mean", (2 + 4) / 2),
    ("seq_mean_token_sum", (6 + 4) / 2),
    ("constant_norm", (6 + 4) / (2 * 5)),
])
def test_aggregate_by_hand(name, expected):
    assert float(aggregate(name, LOSS, MASK, max_response_len=5)) == pytest.approx(expected)


def test_aggregate_errors_and_empty():
    with pytest.raises(ConfigError, match="constant_norm, seq_mean_token_mean, seq_mean_token_sum, token_mean"):
        aggregate("mean", LOSS, MASK)
    with pytest.raises(ValueError, match="max_response_len"):
        aggregate("constant_norm", LOSS, MASK)
    x = LOSS.clone().requires_grad_()
    for name in AGGREGATIONS:
        out = aggregate(name, x, torch.zeros_like(MASK), max_response_len=4)
        assert float(out.detach()) == 0.0
    out.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def _batch(B=5, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([T, 1, 4, 6, 2, 3, 5][:B])
    mask = (torch.arange(T)[None] < lengths[:, None]).to(f64)
    old = -torch.rand(B, T, generator=g, dtype=f64) * 3 - 0.1
    logp = old + 0.1 * torch.randn(B, T, generator=g, dtype=f64)
    ref = old + 0.2 * torch.randn(B, T, generator=g, dtype=f64)
    rollout = old + 0.3 * torch.randn(B, T, generator=g, dtype=f64)
    ent = torch.rand(B, T, generator=g, dtype=f64) + 0.5
    adv = torch.randn(B, generator=g, dtype=f64)
    return logp, old, ref, rollout, ent, adv, mask, lengths


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_aggregation_gradients_follow_the_papers(name):
    """ratio = 1, A = 1 everywhere: d loss / d logp_bt = -w_bt with the weights of each paper."""
    B, T, Lmax = 4, 6, 10
    lengths = torch.tensor([6, 1, 3, 2])
    mask = (torch.arange(T)[None] < lengths[:, None]).to(f64)
    old = -torch.ones(B, T, dtype=f64)
    logp = old.clone().requires_grad_()
    loss, _ = policy_loss(logp, old, torch.ones(B, dtype=f64), mask, AlgorithmConfig(loss_agg=name), max_response_len=Lmax)
    loss.backward()
    weight = {
        "token_mean": mask / mask.sum(),                                 # DAPO: every token equal
        "seq_mean_token_mean": mask / lengths[:, None] / B,              # GRPO: 1 / |o_i| length bias
        "seq_mean_token_sum": mask / B,
        "constant_norm": mask / (B * Lmax),                              # Dr. GRPO: constant
    }[name]
    torch.testing.assert_close(logp.grad, -weight)


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_micro_batches_with_global_denominator_equal_full_batch(name):
    logp, old, ref, rollout, ent, adv, mask, _ = _batch(B=7, T=11, seed=1)
    cfg = AlgorithmConfig(loss_agg=name, kl_coef=0.05, entropy_coef=0.01, tis_cap=2.0, clip_high=0.28)
    full_logp = logp.clone().requires_grad_()
    full, _ = policy_loss(full_logp, old, adv, mask, cfg, ref_logp=ref, entropy=ent, rollout_logp=rollout,
                          max_response_len=11)
    full.backward()
    pieces = [slice(0, 3), slice(3, 4), slice(4, 7)]
    denom = sum(normalizer(name, mask[s], max_response_len=11) for s in pieces)   # "all-reduced"
    micro_logp = logp.clone().requires_grad_()
    total = 0.0
    for s in pieces:
        part, _ = policy_loss(micro_logp[s], old[s], adv[s], mask[s], cfg, ref_logp=ref[s], entropy=ent[s],
                              rollout_logp=rollout[s], max_response_len=11, denominator=denom)
        total = total + part
    total.backward()
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(micro_logp.grad, full_logp.grad)


# ------------------------------------------------------------------ full loss

def test_policy_loss_by_hand_one_sequence():
    # two response tokens + one pad; A = 2; token 0 inside the clip range, token 1 clipped (ratio e^0.5)
    old = t([[-1.0, -2.0, 0.0]])
    logp = t([[-0.9, -1.5, 5.0]]).requires_grad_()
    ref = t([[-1.2, -1.0, 0.0]])
    ent = t([[0.7, 0.4, 3.0]]).requires_grad_()
    mask = t([[1, 1, 0]])
    cfg = AlgorithmConfig(kl_coef=0.1, entropy_coef=0.01, clip_low=0.2, clip_high=0.28, kl_estimator="k3")
    loss, stats = policy_loss(logp, old, t([2.0]), mask, cfg, ref_logp=ref, entropy=ent)
    r0 = math.exp(0.1)
    pg = [-2 * r0, -2 * 1.28]
    k3 = [math.exp(-0.3) + 0.3 - 1, math.exp(0.5) - 0.5 - 1]
    per_token = [pg[i] + 0.1 * k3[i] - 0.01 * [0.7, 0.4][i] for i in range(2)]
    assert float(loss.detach()) == pytest.approx(sum(per_token) / 2)
    assert float(stats["pg_loss"]) == pytest.approx(sum(pg) / 2)
    assert float(stats["kl"]) == pytest.approx(sum(k3) / 2)
    assert float(stats["entropy"]) == pytest.approx(0.55)
    assert float(stats["clip_frac"]) == pytest.approx(0.5)
    assert float(stats["ratio_mean"]) == pytest.approx((r0 + math.exp(0.5)) / 2)
    loss.backward()
    dk3 = [1 - math.exp(-0.3), 1 - math.exp(0.5)]
    torch.testing.assert_close(logp.grad, t([[(-2 * r0 + 0.1 * dk3[0]) / 2, 0.1 * dk3[1] / 2, 0.0]]))
    torch.testing.assert_close(ent.grad, t([[-0.005, -0.005, 0.0]]))


def test_kl_in_reward_removes_kl_from_loss_but_reports_it():
    logp, old, ref, _, _, adv, mask, _ = _batch()
    base = AlgorithmConfig(kl_coef=0.5)
    with_kl, s1 = policy_loss(logp, old, adv, mask, base, ref_logp=ref)
    no_kl, s2 = policy_loss(logp, old, adv, mask, AlgorithmConfig(kl_coef=0.5, kl_in_reward=True), ref_logp=ref)
    torch.testing.assert_close(with_kl - no_kl, 0.5 * aggregate("token_mean", kl_penalty("k3", logp, ref), mask))
    torch.testing.assert_close(no_kl, s2["pg_loss"])
    torch.testing.assert_close(s1["kl"], s2["kl"])


def test_tis_weights_by_hand_and_in_loss():
    old = t([[-1.0, -1.0, -1.0]])
    rollout = t([[-1.5, -0.5, -3.0]])
    torch.testing.assert_close(tis_weights(old, rollout, cap=2.0), t([[math.exp(0.5), math.exp(-0.5), 2.0]]))
    logp = old.clone().requires_grad_()
    mask = t([[1, 1, 1]])
    loss, stats = policy_loss(logp, old, t([1.0]), mask, AlgorithmConfig(tis_cap=2.0), rollout_logp=rollout)
    w = [math.exp(0.5), math.exp(-0.5), 2.0]
    assert float(loss.detach()) == pytest.approx(-sum(w) / 3)
    assert float(stats["tis_weight_mean"]) == pytest.approx(sum(w) / 3)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[-x / 3 for x in w]]))   # weights are constants
    _, off = policy_loss(old, old, t([1.0]), mask, AlgorithmConfig(), rollout_logp=rollout)
    assert "tis_weight_mean" not in off


def test_rollout_is_sequence_mask_and_geometric_truncate_by_hand():
    """algorithm.rollout_is in the loss: sequence-level MIS drops a whole sequence (w = 0, still in the
    token-mean normaliser), geometric truncation caps the per-token geometric mean."""
    old = t([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
    rollout = t([[-1.5, -1.5, -1.0], [-2.2, -1.9, 5.0]])                    # last token of row 2: padding
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv = t([1.0, -1.0])
    # sequence ratios: row 1 exp(0.5 + 0.5 + 0) = e^1 > upper 2 -> dropped; row 2 exp(0.2 - 0.1) = e^0.1 kept
    cfg = AlgorithmConfig(rollout_is="mask", rollout_is_level="sequence", rollout_is_upper=2.0)
    logp = old.clone().requires_grad_()
    loss, st = policy_loss(logp, None, adv, mask, cfg, rollout_logp=rollout)
    w2 = math.exp(0.1)
    assert float(loss.detach()) == pytest.approx((0 + 0 + 0 + w2 + w2) / 5)   # -A w r with A = -1 on row 2
    assert float(st["is_masked_frac"]) == pytest.approx(3 / 5) and float(st["is_weight_mean"]) == pytest.approx(w2)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([[0.0, 0.0, 0.0], [w2 / 5, w2 / 5, 0.0]]))
    # geometric mean per token: row 1 exp(1 / 3) = 1.40 < cap 1.5 -> kept as is; row 2 exp(0.1 / 2)
    cfg = AlgorithmConfig(rollout_is="truncate", rollout_is_level="geometric", rollout_is_upper=1.5)
    loss, st = policy_loss(old, None, adv, mask, cfg, rollout_logp=rollout)
    g1, g2 = math.exp(1 / 3), math.exp(0.05)
    assert float(loss) == pytest.approx((-3 * g1 + 2 * g2) / 5)
    assert float(st["is_masked_frac"]) == 0.0
    cfg = AlgorithmConfig(rollout_is="truncate", rollout_is_level="geometric", rollout_is_upper=1.2)
    loss, _ = policy_loss(old, None, adv, mask, cfg, rollout_logp=rollout)  # row 1 capped at 1.2
    assert float(loss) == pytest.approx((-3 * 1.2 + 2 * g2) / 5)


def test_rollout_is_config_refusals():
    with pytest.raises(ConfigError, match="two corrections of the same ratio"):
        AlgorithmConfig(rollout_is="truncate", tis_cap=2.0).validate()
    with pytest.raises(ConfigError, match="rollout_is_lower .* applies to rollout_is=mask only"):
        AlgorithmConfig(rollout_is="truncate", rollout_is_lower=0.5).validate()
    with pytest.raises(ConfigError, match=r"rollout_is_lower \(3.0\) must be in \[0, rollout_is_upper = 2.0\]"):
        AlgorithmConfig(rollout_is="mask", rollout_is_lower=3.0).validate()
    with pytest.raises(ConfigError, match="rollout_is_upper .* finite number > 0"):
        AlgorithmConfig(rollout_is="mask", rollout_is_upper=0.0).validate()
    from r1mega.algorithms.config import IS_LEVEL_NAMES
    from r1mega.algorithms.offpolicy import IS_LEVELS
    assert tuple(IS_LEVELS) == IS_LEVEL_NAMES


def test_per_token_advantages_and_stats_keys():
    logp, old, ref, rollout, ent, adv, mask, _ = _batch()
    adv_bt = adv[:, None].expand_as(mask).clone()
    cfg = AlgorithmConfig(tis_cap=3.0, dual_clip=3.0)
    a, stats = policy_loss(logp, old, adv, mask, cfg, ref_logp=ref, entropy=ent, rollout_logp=rollout)
    b, _ = policy_loss(logp, old, adv_bt, mask, cfg, ref_logp=ref, entropy=ent, rollout_logp=rollout)
    torch.testing.assert_close(a, b)
    assert {"pg_loss", "kl", "entropy", "clip_frac", "ratio_mean", "tis_weight_mean", "dual_clip_frac"} <= set(stats)
    assert all(v.dim() == 0 and not v.requires_grad for v in stats.values())


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_gradcheck_policy_loss(name):
    logp, old, ref, rollout, ent, adv, mask, _ = _batch(B=3, T=5, seed=7)
    cfg = AlgorithmConfig(loss_agg=name, kl_coef=0.3, entropy_coef=0.02, tis_cap=1.5, dual_clip=3.0,
                          kl_estimator="k3", clip_low=0.05, clip_high=0.08)

    def f(lp, en):
        return policy_loss(lp, old, adv, mask, cfg, ref_logp=ref, entropy=en, rollout_logp=rollout, max_response_len=8)[0]

    assert torch.autograd.gradcheck(f, (logp.clone().requires_grad_(), ent.clone().requires_grad_()))


@pytest.mark.parametrize("name", ["k1", "k2", "k3"])
def test_gradcheck_kl(name):
    logp, _, ref, *_ = _batch(B=2, T=3, seed=4)
    assert torch.autograd.gradcheck(lambda x: kl_penalty(name, x, ref), (logp.clone().requires_grad_(),))


def test_shape_mismatch_is_an_error():
    logp, old, _, _, _, adv, mask, _ = _batch()
    with pytest.raises(ValueError, match="must all be"):
        policy_loss(logp[:, :3], old, adv, mask, AlgorithmConfig())
