"""DAPO sample-level tools and AlgorithmConfig validation."""

from __future__ import annotations

import pytest

from r1mega.algorithms import AlgorithmConfig, apply_soft_overlong_penalty, dynamic_sampling, overlong_filter
from r1mega.algorithms.sample_filters import soft_overlong_penalty
from r1mega.config.base import ConfigError, from_dict
from r1mega.types import Sample


def s(group, reward, n_tokens=3, finish="stop"):
    return Sample(prompt_ids=[1], response_ids=list(range(n_tokens)), group_id=group, reward=reward,
                  finish_reason=finish)


def test_dynamic_sampling_drops_flat_groups():
    batch = [s(0, 1.0), s(1, 0.0), s(0, 1.0), s(1, 1.0), s(2, 0.5), s(3, 0.0), s(3, 0.0), s(0, 1.0)]
    kept, dropped = dynamic_sampling(batch)
    assert dropped == 3                                  # group 0 all 1, group 3 all 0, group 2 single sample
    assert kept == [batch[1], batch[3]]                  # group 1, order kept
    assert len(batch) == 8                               # input untouched


def test_dynamic_sampling_tolerance():
    kept, dropped = dynamic_sampling([s(0, 1.0), s(0, 1.0 + 1e-9), s(1, 0.0), s(1, 0.5)], tol=1e-6)
    assert dropped == 1 and [x.group_id for x in kept] == [1, 1]


def test_overlong_filter_masks_truncated_only():
    batch = [s(0, 1.0, finish="length"), s(0, 0.0), s(1, 1.0, finish="length")]
    out = overlong_filter(batch)
    assert [x.loss_mask for x in out] == [False, True, False]
    assert all(x.loss_mask for x in batch)               # new samples, inputs unchanged
    assert out[1] is batch[1]


def test_apply_soft_overlong_penalty_by_hand():
    batch = [s(0, 1.0, n_tokens=80), s(0, 1.0, n_tokens=90), s(0, 0.0, n_tokens=100)]
    out = apply_soft_overlong_penalty(batch, max_len=100, buffer=20, penalty=0.5)
    assert [x.reward for x in out] == pytest.approx([1.0, 0.75, -0.5])
    assert out[1].reward_breakdown["overlong_penalty"] == pytest.approx(-0.25)
    assert soft_overlong_penalty(95, 100, 20, 2.0) == pytest.approx(-1.5)


@pytest.mark.parametrize("data,match", [
    ({"clip_low": -0.1}, "clip_low"),
    ({"clip_low": 1.0}, "clip_low"),
    ({"clip_high": -1.0}, "clip_high"),
    ({"dual_clip": 1.0}, r"dual_clip \(1.0\) must be > 1"),
    ({"tis_cap": 0.0}, "tis_cap"),
    ({"kl_coef": -0.1}, "kl_coef"),
    ({"eps": 0.0}, "eps"),
    ({"overlong_buffer": -1}, "overlong_buffer"),
    ({"overlong_penalty": -1.0}, "overlong_penalty"),
    ({"group_size": 0}, "group_size"),
])
def test_algorithm_config_validate(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(AlgorithmConfig, data).validate()


def test_algorithm_config_choices():
    AlgorithmConfig().validate()
    cfg = from_dict(AlgorithmConfig, {"advantage": "rloo", "loss_agg": "constant_norm", "dual_clip": 3, "tis_cap": 2})
    cfg.validate()
    assert cfg.dual_clip == 3.0 and cfg.tis_cap == 2.0
    with pytest.raises(ConfigError, match='did you mean "grpo"'):
        from_dict(AlgorithmConfig, {"advantage": "grpoo"})
    with pytest.raises(ConfigError, match="token_mean"):
        from_dict(AlgorithmConfig, {"loss_agg": "mean"})
    with pytest.raises(ConfigError, match="advantage"):
        AlgorithmConfig(advantage="ppo").validate()
