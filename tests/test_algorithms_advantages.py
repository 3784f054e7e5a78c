"""Advantage estimators against hand-computed values; groups interleaved and of unequal sizes."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from r1mega.algorithms import ADVANTAGES, compute_advantages
from r1mega.config.base import ConfigError

# group 0: [1, 0, 1, 1] (G=4), group 7: [0.5, 2.5] (G=2), group 2: [3] (G=1), interleaved
REWARDS = torch.tensor([1.0, 0.5, 0.0, 3.0, 1.0, 2.5, 1.0], dtype=torch.float64)
GROUPS = torch.tensor([0, 7, 0, 2, 0, 7, 0])
EPS = 1e-6


def test_grpo_by_hand():
    # group 0: mean 0.75, sample std sqrt(0.75 / 3) = 0.5; group 7: mean 1.5, std sqrt(2); group 2: 0
    s7 = math.sqrt(2.0)
    expected = [0.25 / (0.5 + EPS), -1.0 / (s7 + EPS), -0.75 / (0.5 + EPS), 0.0, 0.25 / (0.5 + EPS),
                1.0 / (s7 + EPS), 0.25 / (0.5 + EPS)]
    got = compute_advantages("grpo", REWARDS, GROUPS, eps=EPS)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))


def test_dr_grpo_by_hand():
    expected = [0.25, -1.0, -0.75, 0.0, 0.25, 1.0, 0.25]
    torch.testing.assert_close(compute_advantages("dr_grpo", REWARDS, GROUPS), torch.tensor(expected, dtype=torch.float64))


def test_rloo_by_hand():
    # r_i - mean of the other samples of the group; a group of one has no baseline
    expected = [1 - 2 / 3, 0.5 - 2.5, 0 - 1.0, 0.0, 1 - 2 / 3, 2.5 - 0.5, 1 - 2 / 3]
    torch.testing.assert_close(compute_advantages("rloo", REWARDS, GROUPS), torch.tensor(expected, dtype=torch.float64))


def test_reinforce_pp_batch_normalised():
    r = REWARDS.tolist()
    mean, std = statistics.mean(r), statistics.stdev(r)
    expected = [(x - mean) / (std + EPS) for x in r]
    got = compute_advantages("reinforce_pp", REWARDS, GROUPS, eps=EPS)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # ignores groups entirely
    torch.testing.assert_close(got, compute_advantages("reinforce_pp", REWARDS, torch.zeros(7, dtype=torch.long), eps=EPS))


def test_reinforce_pp_baseline():
    centred = [0.25, -1.0, -0.75, 0.0, 0.25, 1.0, 0.25]
    std = statistics.stdev(centred)
    got = compute_advantages("reinforce_pp_baseline", REWARDS, GROUPS, eps=EPS)
    torch.testing.assert_close(got, torch.tensor([c / (std + EPS) for c in centred], dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_flat_groups_give_zero_and_no_nan(name):
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    g = torch.tensor([4, 4, 4, 9, 9])
    a = compute_advantages(name, r, g)
    assert torch.isfinite(a).all()
    if name not in ("reinforce_pp",):
        assert torch.equal(a, torch.zeros(5))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_permutation_equivariant_and_zero_mean_per_group(name):
    gen = torch.Generator().manual_seed(3)
    r = torch.rand(23, generator=gen, dtype=torch.float64)
    g = torch.randint(0, 5, (23,), generator=gen) * 11 + 100       # non-contiguous ids, unequal sizes
    a = compute_advantages(name, r, g)
    perm = torch.randperm(23, generator=gen)
    torch.testing.assert_close(compute_advantages(name, r[perm], g[perm]), a[perm])
    for gid in g.unique():
        sel = g == gid
        assert abs(float(a[sel].sum())) < 1e-9  # float64: <= 23 terms of O(1): ~23 x 3 x eps64 = 1.5e-14


def test_unknown_name_lists_valid():
    with pytest.raises(ConfigError, match=r"unknown advantage estimator 'grpoo'.*did you mean \"grpo\".*dr_grpo, grpo, "
                                          r"reinforce_pp, reinforce_pp_baseline, rloo"):
        compute_advantages("grpoo", REWARDS, GROUPS)


def test_shape_errors():
    with pytest.raises(ValueError):
        compute_advantages("grpo", REWARDS, GROUPS[:3])


def test_assign_advantages_on_samples():
    from r1mega.algorithms import assign_advantages
    from r1mega.types import Sample

    samples = [Sample(prompt_ids=[1], response_ids=[2], group_id=int(g), reward=float(r)) for r, g in zip(REWARDS, GROUPS)]
    adv = assign_advantages(samples, "dr_grpo")
    assert [s.advantage for s in samples] == pytest.approx([0.25, -1.0, -0.75, 0.0, 0.25, 1.0, 0.25])
    torch.testing.assert_close(adv, compute_advantages("dr_grpo", REWARDS, GROUPS))
