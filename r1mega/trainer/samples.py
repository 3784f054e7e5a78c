"""Sample bookkeeping between rollout and training: filter, advantages, sharding,
mini-batch denominators and rollout metrics. Every function is deterministic given the
global sample list, so every rank computes the same result without communication."""

from __future__ import annotations

from collections import defaultdict

import torch

from r1mega.config import Config
from r1mega.rewards.correctness import correctness_reward, is_correct
from r1mega.types import Sample


def prepare(samples: list[Sample], cfg: Config) -> tuple[list[Sample], dict[str, float]]:
    """Reward shaping, DAPO filters and advantages on the global sample list."""
    from r1mega.algorithms import (apply_soft_overlong_penalty, compute_advantages, dynamic_sampling,
                                   overlong_filter)

    a = cfg.algorithm
    info: dict[str, float] = {}
    if a.overlong_penalty > 0:
        samples = apply_soft_overlong_penalty(samples, max_len=cfg.rollout.max_new_tokens, buffer=a.overlong_buffer,
                                              penalty=a.overlong_penalty)
    if a.dynamic_sampling:
        samples, dropped = dynamic_sampling(samples)
        info["filter/dropped_groups"] = float(dropped)
    if a.overlong_filter:
        samples = overlong_filter(samples)
    if samples:
        rewards = torch.tensor([s.reward for s in samples], dtype=torch.float64)
        groups = torch.tensor([s.group_id for s in samples], dtype=torch.long)
        adv = compute_advantages(a.advantage, rewards, groups, eps=a.eps)
        for s, v in zip(samples, adv.tolist()):
            s.advantage = float(v)
    return samples, info


def split_groups(samples: list[Sample], parts: int) -> list[list[Sample]]:
    """Whole groups, in order, dealt into ``parts`` contiguous shares of near-equal size."""
    by_group: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_group[s.group_id].append(s)
    groups = [by_group[g] for g in sorted(by_group)]
    out: list[list[Sample]] = [[] for _ in range(parts)]
    for i in range(parts):
        lo, hi = len(groups) * i // parts, len(groups) * (i + 1) // parts
        out[i] = [s for g in groups[lo:hi] for s in g]
    return out


def shard(samples: list[Sample], dp_size: int, mini_batches: int) -> list[list[list[Sample]]]:
    """shares[d][m]: the samples of data-parallel rank d in mini-batch m."""
    return [split_groups(share, mini_batches) for share in split_groups(samples, dp_size)]


def denominator(samples: list[Sample], agg: str, max_response_len: int) -> float:
    """Normaliser of one global mini-batch (all DP ranks) for the aggregation mode ``agg``: the
    normaliser of :mod:`r1mega.algorithms.aggregation` of the samples' loss masks, at least 1."""
    from r1mega.algorithms import length_normalizer

    lengths = torch.tensor([loss_tokens(s) for s in samples], dtype=torch.float64)
    return float(length_normalizer(agg, lengths, max_response_len).clamp_min(1))


def loss_tokens(s: Sample) -> int:
    """Response tokens of ``s`` in the policy loss: the ones its packed mask (trainer/batch.py) marks."""
    if not s.loss_mask:
        return 0
    return len(s.response_ids) if s.response_mask is None else int(sum(s.response_mask))


def rollout_metrics(samples: list[Sample]) -> dict[str, float]:
    """Reward, accuracy and length statistics of a step's samples."""
    if not samples:
        return {}
    n = len(samples)
    lens = [len(s.response_ids) for s in samples]
    out = {
        "reward/mean": sum(s.reward for s in samples) / n,
        "response/len_mean": sum(lens) / n,
        "response/len_max": float(max(lens)),
        "response/clip_frac": sum(s.truncated for s in samples) / n,
    }
    names = sorted({k for s in samples for k, v in s.reward_breakdown.items() if isinstance(v, (int, float))})
    for k in names:
        vals = [float(s.reward_breakdown[k]) for s in samples if isinstance(s.reward_breakdown.get(k), (int, float))]
        if vals:
            out[f"reward/{k}"] = sum(vals) / len(vals)
    judged = [s for s in samples if correctness_reward(s.metadata) in s.reward_breakdown]
    if judged:  # each sample by its row's own correctness reward (r1mega.rewards.correctness)
        out["acc/mean"] = sum(is_correct(s) for s in judged) / len(judged)
    kinds = sorted({s.kind for s in samples})
    if len(kinds) > 1:  # mixed batches (rule rewards + reward model): each family's mean reward
        for kind in kinds:
            rs = [s.reward for s in samples if s.kind == kind]
            out[f"reward/mean_{kind}"] = sum(rs) / len(rs)
            out[f"batch/frac_{kind}"] = len(rs) / n
    return out


def mask_stale_tokens(samples: list[Sample], version: int) -> None:
    """Partial rollout, ``rollout.partial_tokens=current``: in place, the response tokens generated
    by an older policy version than ``version`` get loss mask 0 (on top of any mask they have)."""
    from r1mega.rollout.partial import token_versions

    for s in samples:
        if s.token_versions is None and s.policy_version == version:
            continue
        current = [int(v == version) for v in token_versions(s)]
        s.response_mask = current if s.response_mask is None else [a * b for a, b in zip(s.response_mask, current)]


def staleness(samples: list[Sample], version: int) -> dict[str, float]:
    """Staleness of the loss tokens against the trained ``version``
    (:func:`r1mega.algorithms.offpolicy.staleness_metrics`, counted over the tokens the loss
    takes), and the share of response tokens masked out as stale."""
    from r1mega.algorithms.offpolicy import staleness_metrics
    from r1mega.rollout.partial import token_versions

    lags, masked, total = [], 0, 0
    for s in samples:
        if not s.loss_mask:
            continue
        mask = s.response_mask or [1] * len(s.response_ids)
        vs = token_versions(s)
        lags.extend(version - v for v, m in zip(vs, mask) if m)
        masked += sum(1 for v, m in zip(vs, mask) if not m and v != version)
        total += len(vs)
    return {**staleness_metrics(lags), "offpolicy/stale_masked_frac": masked / total if total else 0.0}
