"""Off-policy corrections (r1mega.algorithms.offpolicy): importance weights (TIS / MIS at token,
sequence and geometric level), AReaL's decoupled PPO loss and the staleness / weight metrics,
against hand-computed values, the standard clipped loss and analytic gradients."""

from __future__ import annotations

import math

import pytest
import torch

from r1mega.algorithms.aggregation import AGGREGATIONS, aggregate
from r1mega.algorithms.config import AlgorithmConfig
from r1mega.algorithms.loss import clipped_pg_loss, policy_loss, tis_weights
from r1mega.algorithms.offpolicy import decoupled_ppo_loss, importance_weights, offpolicy_metrics

f64 = torch.float64
e = math.exp
NAN, INF = float("nan"), float("inf")


def t(x, dtype=f64):
    return torch.tensor(x, dtype=dtype)


# ------------------------------------------------------------------ importance weights, by hand

# log(pi / pi_behav) per token; row 1 has one padding token holding garbage.
D = [[0.2, -0.1, 0.4], [-0.3, 0.1, 0.0]]
MASK = [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def _iw_inputs(pad_logp=NAN, pad_behav=0.0):
    logp = t([[-1.0, -2.0, -0.5], [-1.5, -0.7, pad_logp]])
    behav = logp - t(D)
    behav[1, 2] = pad_behav
    return logp, behav, t(MASK)


@pytest.mark.parametrize("pad", [(NAN, 0.0), (50.0, -50.0), (-INF, INF), (0.0, NAN)])
@pytest.mark.parametrize("level,mode,kwargs,weights,new_mask", [
    # token TIS, cap 1.3: e^0.4 = 1.49 is truncated, the rest is exp(d)
    ("token", "truncate", {"cap": 1.3},
     [[e(0.2), e(-0.1), 1.3], [e(-0.3), e(0.1), 0.0]], MASK),
    # token MIS, [0.8, 1.3]: e^0.4 = 1.49 above, e^-0.3 = 0.741 below: both dropped
    ("token", "mask", {"lower": 0.8, "upper": 1.3},
     [[e(0.2), e(-0.1), 0.0], [0.0, e(0.1), 0.0]], [[1, 1, 0], [0, 1, 0]]),
    # token MIS without a lower bound keeps the small weight
    ("token", "mask", {"upper": 1.3},
     [[e(0.2), e(-0.1), 0.0], [e(-0.3), e(0.1), 0.0]], [[1, 1, 0], [1, 1, 0]]),
    # sequence: row sums 0.5 and -0.2 (the padding token is not in the sum)
    ("sequence", "truncate", {"cap": 1.5},
     [[1.5, 1.5, 1.5], [e(-0.2), e(-0.2), 0.0]], MASK),
    # sequence MIS [0.8, 1.5]: e^0.5 = 1.65 drops all of row 0; e^-0.2 = 0.819 keeps row 1
    ("sequence", "mask", {"lower": 0.8, "upper": 1.5},
     [[0.0, 0.0, 0.0], [e(-0.2), e(-0.2), 0.0]], [[0, 0, 0], [1, 1, 0]]),
    # geometric: row means 0.5 / 3 and -0.2 / 2 (2 mask tokens, not 3)
    ("geometric", "truncate", {"cap": 1.1},
     [[1.1, 1.1, 1.1], [e(-0.1), e(-0.1), 0.0]], MASK),
    ("geometric", "truncate", {"cap": 2.0},
     [[e(0.5 / 3)] * 3, [e(-0.1), e(-0.1), 0.0]], MASK),
    # geometric MIS [0.95, 1.2]: e^(1/6) = 1.18 kept, e^-0.1 = 0.905 dropped
    ("geometric", "mask", {"lower": 0.95, "upper": 1.2},
     [[e(0.5 / 3)] * 3, [0.0, 0.0, 0.0]], [[1, 1, 1], [0, 0, 0]]),
])
def test_importance_weights_by_hand(level, mode, kwargs, weights, new_mask, pad):
    logp, behav, mask = _iw_inputs(*pad)
    w, m = importance_weights(logp, behav, mask, level=level, mode=mode, **kwargs)
    torch.testing.assert_close(w, t(weights))
    assert torch.equal(m, t(new_mask))
    assert w.dtype == f64 and m.dtype == mask.dtype
    assert torch.isfinite(w).all()                  # garbage at the padding position never leaks


def test_bounds_are_inclusive_and_exact_at_one():
    logp = t([[-1.0, -2.0], [-0.5, -3.0]])
    mask = t([[1.0, 1.0], [1.0, 0.0]])
    for level in ("token", "sequence", "geometric"):
        w, m = importance_weights(logp, logp.clone(), mask, level=level, mode="mask", lower=1.0, upper=1.0)
        assert torch.equal(w, mask) and torch.equal(m, mask)      # w = e^0 = 1 exactly, kept at both bounds
        w, m = importance_weights(logp, logp.clone(), mask, level=level, mode="truncate", cap=1.0)
        assert torch.equal(w, mask) and torch.equal(m, mask)


def test_long_sequences_do_not_overflow_float32():
    # 300 tokens of log ratio +-1: the sequence ratio e^300 / e^-300 is outside float32's range
    T = 300
    logp = torch.full((2, T), -1.0)
    behav = logp - t([[1.0] * T, [-1.0] * T], torch.float32)
    mask = torch.ones(2, T)
    w, m = importance_weights(logp, behav, mask, level="sequence", mode="truncate", cap=3.0)
    assert torch.equal(w[0], torch.full((T,), 3.0)) and torch.equal(w[1], torch.zeros(T))   # e^-300 -> 0
    assert w.dtype == torch.float32 and torch.equal(m, mask)
    w, m = importance_weights(logp, behav, mask, level="sequence", mode="mask", upper=3.0)
    assert torch.equal(m, t([[0.0] * T, [1.0] * T], torch.float32))
    assert torch.isfinite(w).all() and float(w[0].abs().sum()) == 0.0
    w, _ = importance_weights(logp, behav, mask, level="geometric", mode="truncate", cap=10.0)
    torch.testing.assert_close(w, t([[e(1.0)] * T, [e(-1.0)] * T], torch.float32))


def test_weights_are_detached_and_keep_dtypes():
    logp = t([[-1.0, -0.5, -2.0]], torch.float32).requires_grad_()
    behav = t([[-1.2, -0.4, -2.0]], torch.float32).requires_grad_()
    bool_mask = torch.tensor([[True, True, False]])
    w, m = importance_weights(logp, behav, bool_mask, level="token", mode="mask", upper=1.1)
    assert not w.requires_grad and w.dtype == torch.float32
    assert m.dtype == torch.bool and m.tolist() == [[False, True, False]]   # e^0.2 = 1.22 > 1.1 dropped
    torch.testing.assert_close(w, t([[0.0, e(-0.1), 0.0]], torch.float32))
    w.sum()                                                                   # no graph to reach
    assert logp.grad is None and behav.grad is None


def test_token_truncate_agrees_with_loss_tis_weights():
    g = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 9, generator=g, dtype=f64) * 3
    rollout = old + 0.5 * torch.randn(4, 9, generator=g, dtype=f64)
    mask = (torch.rand(4, 9, generator=g) > 0.3).to(f64)
    w, _ = importance_weights(old, rollout, mask, level="token", mode="truncate", cap=1.2)
    assert torch.equal(w, tis_weights(old, rollout, 1.2) * mask)


# ------------------------------------------------------------------ decoupled PPO loss, by hand

CLIP_LOW, CLIP_HIGH = 0.2, 0.28
# row 0, per token: log(pi_prox / pi_behav) E, log(pi_theta / pi_prox) R, advantage A
E = [0.3, -0.2, 0.0, 0.5, 1.0]
R = [0.5, -0.5, -0.5, 0.5, 0.1]
A = [1.0, 1.0, -1.0, -1.0, 2.0]


def _decoupled_inputs(dtype=f64, pad=(50.0, NAN, -50.0, NAN)):
    """Row 0 as above; row 1: one response token (E = -0.4, R = 0.1, A = -0.5) then padding."""
    pl, pp, pb, pa = pad
    behav = t([[-1.0] * 5, [-2.0, pb, pb, pb, pb]], dtype)
    prox = t([[-1.0 + x for x in E], [-2.4, pp, pp, pp, pp]], dtype)
    logp = t([[-1.0 + x + r for x, r in zip(E, R)], [-2.3, pl, pl, pl, pl]], dtype)
    adv = t([A, [-0.5, pa, pa, pa, pa]], dtype)
    mask = t([[1.0] * 5, [1.0, 0.0, 0.0, 0.0, 0.0]], dtype)
    return logp, prox, behav, adv, mask


# standard clipped terms of row 0 (ratio against prox), as in test_algorithms_loss: clipped at
# 1.28 (A > 0, r = 1.65), unclipped, clipped at 0.8 (A < 0, r = 0.61), unclipped, unclipped
PG0 = [-1.28, -e(-0.5), 0.8, e(0.5), -2 * e(0.1)]
PG1 = -(-0.5) * e(0.1)                                   # row 1: r = e^0.1 inside [0.8, 1.28]


@pytest.mark.parametrize("cap,mode,w_last,kept_last", [
    (None, "mask", e(1.0), 1.0),          # no cap: w = e^1 = 2.72
    (2.0, "mask", 0.0, 0.0),              # AReaL: w > cap -> token dropped
    (2.0, "truncate", 2.0, 1.0),          # TIS: min(w, cap)
    (3.0, "mask", e(1.0), 1.0),           # below the cap: untouched
])
def test_decoupled_ppo_loss_by_hand(cap, mode, w_last, kept_last):
    logp, prox, behav, adv, mask = _decoupled_inputs()
    logp.requires_grad_()
    loss, parts = decoupled_ppo_loss(logp, prox, behav, adv, mask, CLIP_LOW, CLIP_HIGH,
                                     behav_cap=cap, behav_cap_mode=mode)
    w0 = [e(0.3), e(-0.2), 1.0, e(0.5), w_last]
    w1 = e(-0.4)
    torch.testing.assert_close(parts["weight"], t([w0, [w1, 0, 0, 0, 0]]))
    assert torch.equal(parts["mask"], t([[1, 1, 1, 1, kept_last], [1, 0, 0, 0, 0]]))
    torch.testing.assert_close(loss.detach(), t([[w * pg for w, pg in zip(w0, PG0)], [w1 * PG1, 0, 0, 0, 0]]))
    torch.testing.assert_close(parts["ratio"], t([[e(r) for r in R], [e(0.1), 1, 1, 1, 1]]))
    assert parts["clipped"].tolist() == [[True, False, True, False, False], [False] * 5]
    assert not parts["dual_clipped"].any()
    assert not parts["weight"].requires_grad and not parts["ratio"].requires_grad
    loss.sum().backward()
    # d l / d logp = -w * A * r on unclipped tokens, 0 on clipped ones and on padding
    grad0 = [0.0, -e(-0.2) * e(-0.5), 0.0, e(0.5) * e(0.5), -w_last * 2 * e(0.1)]
    grad1 = -w1 * (-0.5) * e(0.1)
    torch.testing.assert_close(logp.grad, t([grad0, [grad1, 0, 0, 0, 0]]))
    # token_mean over the original mask (AReaL: dropped tokens stay in the denominator, 6) or the
    # returned one (renormalised over the kept tokens)
    total = sum(w * pg for w, pg in zip(w0, PG0)) + w1 * PG1
    assert float(aggregate("token_mean", loss.detach(), mask)) == pytest.approx(total / 6)
    assert float(aggregate("token_mean", loss.detach(), parts["mask"])) == pytest.approx(total / (5 + kept_last))


def test_decoupled_dual_clip_by_hand():
    # one token, A = -1: r = e^1 = 2.72 against prox, w = e^0.2; dual clip 2 caps the term at 2
    logp, prox, behav = t([[0.0]]), t([[-1.0]]), t([[-1.2]])
    loss, parts = decoupled_ppo_loss(logp.requires_grad_(), prox, behav, t([-1.0]), t([[1.0]]), dual_clip=2.0)
    torch.testing.assert_close(loss.detach(), t([[e(0.2) * 2.0]]))
    assert parts["dual_clipped"].tolist() == [[True]]
    loss.sum().backward()
    assert logp.grad.tolist() == [[0.0]]


@pytest.mark.parametrize("dtype", [f64, torch.float32])
def test_decoupled_padding_does_not_matter(dtype):
    clean = _decoupled_inputs(dtype, pad=(0.0, 0.0, 0.0, 0.0))
    results = []
    for pad in [(0.0, 0.0, 0.0, 0.0), (50.0, NAN, -50.0, NAN), (INF, -INF, NAN, INF), (-300.0, 300.0, 1e30, -1e30)]:
        logp, prox, behav, adv, mask = _decoupled_inputs(dtype, pad)
        assert torch.equal(mask, clean[4])
        logp.requires_grad_()
        loss, parts = decoupled_ppo_loss(logp, prox, behav, adv, mask, CLIP_LOW, CLIP_HIGH, behav_cap=2.0)
        agg = aggregate("seq_mean_token_mean", loss, mask)
        agg.backward()
        assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()
        assert torch.equal(loss[1, 1:], torch.zeros(4, dtype=dtype))
        assert torch.equal(logp.grad[1, 1:], torch.zeros(4, dtype=dtype))
        results.append((agg.detach(), logp.grad, parts["weight"], parts["mask"]))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_decoupled_advantages_per_sequence_equal_per_token_and_odd_shapes():
    g = torch.Generator().manual_seed(11)
    for B, T in [(1, 1), (3, 1), (1, 6), (5, 3)]:
        behav = -torch.rand(B, T, generator=g, dtype=f64) * 2 - 0.1
        prox = behav + 0.3 * torch.randn(B, T, generator=g, dtype=f64)
        logp = prox + 0.3 * torch.randn(B, T, generator=g, dtype=f64)
        adv = torch.randn(B, generator=g, dtype=f64)
        mask = torch.ones(B, T, dtype=f64)
        a, _ = decoupled_ppo_loss(logp, prox, behav, adv, mask)
        b, _ = decoupled_ppo_loss(logp, prox, behav, adv[:, None].expand(B, T).clone(), mask)
        assert a.shape == (B, T) and torch.equal(a, b)


# ------------------------------------------------------------------ reduction to the standard loss

def _random_batch(B, T, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, T + 1, (B,), generator=g)
    lengths[0] = T                                   # at least one full row; others may be empty
    mask = (torch.arange(T)[None] < lengths[:, None]).to(f64)
    old = -torch.rand(B, T, generator=g, dtype=f64) * 3 - 0.05
    logp = old + 0.3 * torch.randn(B, T, generator=g, dtype=f64)   # many tokens outside the clip range
    adv = torch.randn(B, generator=g, dtype=f64)
    adv_bt = torch.randn(B, T, generator=g, dtype=f64)
    return logp, old, adv, adv_bt, mask


@pytest.mark.parametrize("B,T,seed", [(1, 1, 0), (3, 7, 1), (6, 13, 2), (9, 5, 3)])
@pytest.mark.parametrize("dual_clip", [None, 1.2])
@pytest.mark.parametrize("cap", [None, ("mask", 1.0), ("truncate", 1.0), ("mask", 5.0)])
def test_decoupled_reduces_exactly_to_standard_clip_when_prox_is_behav(B, T, seed, dual_clip, cap):
    logp, old, adv, adv_bt, mask = _random_batch(B, T, seed)
    kw = {} if cap is None else {"behav_cap_mode": cap[0], "behav_cap": cap[1]}
    for a in (adv, adv_bt):
        a_std = a[:, None] if a.dim() == 1 else a
        std, std_clipped, _ = clipped_pg_loss(logp, old, a_std, 0.15, 0.3, dual_clip)
        ours, parts = decoupled_ppo_loss(logp, old, old.clone(), a, mask, 0.15, 0.3, dual_clip=dual_clip, **kw)
        sel = mask > 0
        assert torch.equal(ours[sel], std[sel])                       # bit for bit on response tokens
        assert torch.equal(ours[~sel], torch.zeros_like(ours[~sel]))
        assert torch.equal(parts["weight"], mask) and torch.equal(parts["mask"], mask)
        assert torch.equal(parts["clipped"], std_clipped & sel)
        for name in sorted(AGGREGATIONS):
            x, y = logp.clone().requires_grad_(), logp.clone().requires_grad_()
            l_ours = aggregate(name, decoupled_ppo_loss(x, old, old, a, mask, 0.15, 0.3, dual_clip=dual_clip, **kw)[0],
                               mask, max_response_len=T + 2)
            cfg = AlgorithmConfig(loss_agg=name, clip_low=0.15, clip_high=0.3, dual_clip=dual_clip)
            l_std, _ = policy_loss(y, old, a, mask, cfg, max_response_len=T + 2)
            assert torch.equal(l_ours.detach(), l_std.detach()), name
            l_ours.backward()
            l_std.backward()
            assert torch.equal(x.grad, y.grad), name


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_policy_loss_tis_is_decoupled_with_truncated_cap(name):
    """policy_loss with tis_cap = decoupled loss with prox = old, behav = rollout, truncate mode."""
    logp, old, adv, _, mask = _random_batch(5, 8, 7)
    rollout = old + 0.4 * torch.randn(5, 8, generator=torch.Generator().manual_seed(8), dtype=f64)
    x, y = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    cfg = AlgorithmConfig(loss_agg=name, tis_cap=1.5, clip_high=0.28)
    ours, _ = decoupled_ppo_loss(x, old, rollout, adv, mask, 0.2, 0.28, behav_cap=1.5, behav_cap_mode="truncate")
    l_ours = aggregate(name, ours, mask, max_response_len=10)
    l_std, _ = policy_loss(y, old, adv, mask, cfg, rollout_logp=rollout, max_response_len=10)
    assert torch.equal(l_ours.detach(), l_std.detach())
    l_ours.backward()
    l_std.backward()
    assert torch.equal(x.grad, y.grad)


# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("cap", [None, ("truncate", 1.5), ("mask", 1.5)])
def test_decoupled_gradient_is_minus_w_a_r_unclipped_and_zero_clipped(cap):
    g = torch.Generator().manual_seed(5)
    B, T = 6, 11
    behav = -torch.rand(B, T, generator=g, dtype=f64) * 3 - 0.05
    prox = behav + 0.5 * torch.randn(B, T, generator=g, dtype=f64)
    logp0 = prox + 0.3 * torch.randn(B, T, generator=g, dtype=f64)
    adv = torch.randn(B, T, generator=g, dtype=f64)
    mask = (torch.rand(B, T, generator=g) > 0.25).to(f64)
    cl, ch = 0.2, 0.28
    logp = logp0.clone().requires_grad_()
    prox_g, behav_g = prox.clone().requires_grad_(), behav.clone().requires_grad_()
    kw = {} if cap is None else {"behav_cap_mode": cap[0], "behav_cap": cap[1]}
    loss, parts = decoupled_ppo_loss(logp, prox_g, behav_g, adv, mask, cl, ch, **kw)
    loss.sum().backward()
    assert prox_g.grad is None and behav_g.grad is None        # w and the proximal policy are constants
    assert not parts["weight"].requires_grad

    w = torch.exp(prox - behav)
    if cap is not None and cap[0] == "truncate":
        w = torch.clamp(w, max=cap[1])
    elif cap is not None:
        w = torch.where(w > cap[1], 0.0, w)
    r = torch.exp(logp0 - prox)
    clipped = ((adv > 0) & (r > 1 + ch)) | ((adv < 0) & (r < 1 - cl))
    assert clipped.any() and (~clipped & (mask > 0)).any()     # both branches are exercised
    expected = torch.where(clipped | (mask == 0), 0.0, -w * adv * r)
    torch.testing.assert_close(logp.grad, expected)
    if cap is not None and cap[0] == "mask":
        assert ((w == 0) & (mask > 0)).any()                   # the cap did drop tokens here


# ------------------------------------------------------------------ metrics

def test_offpolicy_metrics_per_sample_by_hand():
    mask = t([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0], [0, 0, 0]])
    new_mask = t([[1, 1, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    # 7.0 / 9.0 sit on dropped or padding tokens: they must not enter the statistics
    weights = t([[0.5, 2.0, 7.0], [1.5, 1.0, 9.0], [2.0, 0, 0], [7.0, 7.0, 7.0], [1.0, 0, 0], [9.0, 9.0, 9.0]])
    versions = torch.tensor([5, 4, 4, 2, 5, 0])      # row 5 has no mask token: its lag 5 is not counted
    got = offpolicy_metrics(versions, 5, weights, mask, new_mask, cap=2.0, max_lag=2)
    kept = [0.5, 2.0, 1.5, 1.0, 2.0, 1.0]
    mean = sum(kept) / 6                                       # 4 / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in kept) / 6)   # sqrt(11) / 6
    expected = {
        "offpolicy/staleness_lag_0": 2.0, "offpolicy/staleness_lag_1": 2.0, "offpolicy/staleness_lag_2+": 1.0,
        "offpolicy/staleness_mean": (0 + 1 + 1 + 3 + 0) / 5, "offpolicy/staleness_max": 3.0,
        "offpolicy/is_weight_mean": mean, "offpolicy/is_weight_min": 0.5, "offpolicy/is_weight_max": 2.0,
        "offpolicy/is_weight_std": std,
        "offpolicy/is_masked_frac": 4 / 10,                    # 10 response tokens, 6 kept
        "offpolicy/is_truncated_frac": 2 / 10,                 # the two kept weights at the cap 2.0
    }
    assert set(got) == set(expected)
    assert all(type(v) is float for v in got.values())
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key
    assert std == pytest.approx(math.sqrt(11) / 6)

    default = offpolicy_metrics([5, 4, 4, 2, 5, 0], 5, weights, mask, new_mask)
    assert [k for k in default if "lag_" in k] == [f"offpolicy/staleness_lag_{k}" for k in range(8)] + [
        "offpolicy/staleness_lag_8+"]
    assert [default[f"offpolicy/staleness_lag_{k}"] for k in range(4)] == [2.0, 2.0, 0.0, 1.0]
    assert default["offpolicy/is_truncated_frac"] == 0.0          # no cap given


def test_offpolicy_metrics_per_token_versions_by_hand():
    mask = t([[1, 1, 1], [1, 1, 0]])
    versions = torch.tensor([[3, 3, 4], [2, 4, 99]])         # 99 is padding (a "future" version, ignored)
    w = t([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    got = offpolicy_metrics(versions, 4, w, mask, mask, max_lag=1)
    # lags over the 5 mask tokens: 1, 1, 0, 2, 0
    assert got["offpolicy/staleness_lag_0"] == 2.0 and got["offpolicy/staleness_lag_1+"] == 3.0
    assert got["offpolicy/staleness_mean"] == pytest.approx(4 / 5) and got["offpolicy/staleness_max"] == 2.0
    assert got["offpolicy/is_weight_std"] == 0.0 and got["offpolicy/is_masked_frac"] == 0.0


def test_offpolicy_metrics_empty_masks_give_zeros():
    z = torch.zeros(2, 3, dtype=f64)
    got = offpolicy_metrics(torch.tensor([1, 1]), 3, torch.full((2, 3), NAN, dtype=f64), z, z, cap=2.0, max_lag=3)
    assert all(v == 0.0 for v in got.values())
    # with response tokens but every one dropped: weight stats 0, masked share 1
    m = t([[1, 1, 0], [0, 0, 0]])
    got = offpolicy_metrics(torch.tensor([3, 3]), 3, z, m, z)
    assert got["offpolicy/is_masked_frac"] == 1.0 and got["offpolicy/is_weight_mean"] == 0.0
    assert got["offpolicy/staleness_lag_0"] == 1.0                # one sample with mask tokens


def test_metrics_of_importance_weights_end_to_end():
    logp, behav, mask = _iw_inputs()
    w, m = importance_weights(logp, behav, mask, level="token", mode="truncate", cap=1.3)
    got = offpolicy_metrics(torch.tensor([0, 0]), 0, w, mask, m, cap=1.3)
    assert got["offpolicy/is_truncated_frac"] == pytest.approx(1 / 5)     # only e^0.4 hit the cap
    assert got["offpolicy/is_weight_max"] == pytest.approx(1.3)
    assert got["offpolicy/is_weight_min"] == pytest.approx(e(-0.3))
    w, m = importance_weights(logp, behav, mask, level="token", mode="mask", lower=0.8, upper=1.3)
    got = offpolicy_metrics(torch.tensor([0, 0]), 0, w, mask, m)
    assert got["offpolicy/is_masked_frac"] == pytest.approx(2 / 5)
    assert got["offpolicy/is_weight_mean"] == pytest.approx((e(0.2) + e(-0.1) + e(0.1)) / 3)


# ------------------------------------------------------------------ argument errors

_X = t([[-1.0, -2.0, -0.5]])
_M = t([[1.0, 1.0, 0.0]])


@pytest.mark.parametrize("call,match", [
    (lambda: importance_weights(_X, _X, _M, cap=0.0), r"cap=0\.0: mode='truncate' needs a cap > 0"),
    (lambda: importance_weights(_X, _X, _M, cap=-1.0), r"cap=-1\.0"),
    (lambda: importance_weights(_X, _X, _M, cap=NAN), r"cap=nan"),
    (lambda: importance_weights(_X, _X, _M), r"cap=None: mode='truncate' needs a cap > 0"),
    (lambda: importance_weights(_X, _X, _M, cap=2.0, upper=3.0), r"mode='truncate' takes only cap"),
    (lambda: importance_weights(_X, _X, _M, mode="mask", lower=2.0, upper=1.0),
     r"lower=2\.0: must be None or satisfy 0 <= lower <= upper \(upper=1\.0\)"),
    (lambda: importance_weights(_X, _X, _M, mode="mask", lower=-0.1, upper=1.0), r"lower=-0\.1"),
    (lambda: importance_weights(_X, _X, _M, mode="mask", lower=0.5), r"upper=None: mode='mask' needs a finite upper"),
    (lambda: importance_weights(_X, _X, _M, mode="mask", upper=0.0), r"upper=0\.0"),
    (lambda: importance_weights(_X, _X, _M, mode="mask", upper=INF), r"upper=inf"),
    (lambda: importance_weights(_X, _X, _M, mode="mask", cap=2.0, upper=3.0), r"cap=2\.0: mode='mask' takes lower"),
    (lambda: importance_weights(_X, _X, _M, mode="clip", cap=2.0), r"mode='clip': must be one of 'truncate', 'mask'"),
    (lambda: importance_weights(_X, _X, _M, level="tokens", cap=2.0),
     r"unknown importance_weights level 'tokens'.*geometric, sequence, token"),
    (lambda: importance_weights(_X, _X[:, :2], _M, cap=2.0),
     r"logp \(1, 3\), behav_logp \(1, 2\), mask \(1, 3\): must all be the same \(B, T\) shape"),
    (lambda: importance_weights(_X[0], _X[0], _M[0], cap=2.0), r"must all be the same \(B, T\) shape"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([1.0]), _M, behav_cap=0.0), r"behav_cap=0\.0: must be > 0"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([1.0]), _M, behav_cap=2.0, behav_cap_mode="clip"),
     r"behav_cap_mode='clip': must be one of 'truncate', 'mask'"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([1.0]), _M, clip_low=1.0), r"clip_low=1\.0: must be in \[0, 1\)"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([1.0]), _M, clip_high=-0.1), r"clip_high=-0\.1: must be >= 0"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([1.0]), _M, dual_clip=1.0), r"dual_clip=1\.0: must be > 1"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([1.0, 2.0]), _M), r"advantages \(2,\): must be \(B,\) or \(B, T\)"),
    (lambda: decoupled_ppo_loss(_X, _X, _X, t([[1.0, 2.0]]), _M), r"advantages \(1, 2\)"),
    (lambda: decoupled_ppo_loss(_X, _X.T, _X, t([1.0]), _M), r"prox_logp \(3, 1\)"),
    (lambda: offpolicy_metrics([1], 2, _X, _M, _M, max_lag=0), r"max_lag=0: must be an int >= 1"),
    (lambda: offpolicy_metrics([1], 2, _X, _M, _M, cap=0.0), r"cap=0\.0: must be > 0"),
    (lambda: offpolicy_metrics([3], 2, _X, _M, _M), r"versions: must all be <= current_version=2 \(max version 3\)"),
    (lambda: offpolicy_metrics([1.0], 2, _X, _M, _M), r"versions: must hold integer policy versions"),
    (lambda: offpolicy_metrics([1, 1], 2, _X, _M, _M), r"versions \(2,\): must be \(B,\) or \(B, T\)"),
    (lambda: offpolicy_metrics([1], 2, _X, _M, _M[:, :2]), r"new_mask \(1, 2\)"),
])
def test_argument_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
