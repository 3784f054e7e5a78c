"""Advantage estimators: one scalar reward per sample -> one advantage per sample.

All take ``rewards`` (N,) and ``group_ids`` (N,) long, where the samples of one prompt share a
group id (ids need not be contiguous or sorted, and groups may have different sizes G_g).
They return (N,) advantages in the dtype of ``rewards``; the trainer broadcasts them over the
response tokens. Selection is by name through :data:`ADVANTAGES` / :func:`compute_advantages`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from r1mega.config.base import choose
from r1mega.types import Sample


def group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample (group mean, group sample std, group size), each (N,).

    std is the unbiased sample standard deviation sqrt(sum (r - mean)^2 / (G - 1)), as in the
    reference GRPO implementations (``torch.std``); it is 0 for a group of size 1.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and group_ids {tuple(group_ids.shape)} must both be (N,)")
    _, inv = torch.unique(group_ids, return_inverse=True)            # (N,) -> group index 0..K-1
    k = int(inv.max()) + 1 if inv.numel() else 0
    count = torch.zeros(k, dtype=rewards.dtype, device=rewards.device).index_add_(0, inv, torch.ones_like(rewards))
    total = torch.zeros(k, dtype=rewards.dtype, device=rewards.device).index_add_(0, inv, rewards)
    mean = (total / count)[inv]                                       # (N,)
    sq = torch.zeros(k, dtype=rewards.dtype, device=rewards.device).index_add_(0, inv, (rewards - mean) ** 2)
    var = sq / (count - 1).clamp_min(1)
    return mean, var.sqrt()[inv], count[inv]


def grpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO outcome advantage (DeepSeekMath, arXiv 2402.03300, eq. for outcome supervision):

        A_i = (r_i - mean(r_group)) / (std(r_group) + eps)

    A group whose rewards are all equal (or of size 1) gets A = 0.
    """
    mean, std, _ = group_stats(rewards, group_ids)
    return (rewards - mean) / (std + eps)


def dr_grpo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Dr. GRPO advantage (Liu et al., "Understanding R1-Zero-Like Training", arXiv 2503.20783):

        A_i = r_i - mean(r_group)

    Dropping the std division removes GRPO's question-difficulty bias (groups with small reward
    variance are no longer up-weighted). ``eps`` is unused (kept for a uniform signature).
    """
    mean, _, _ = group_stats(rewards, group_ids)
    return rewards - mean


def rloo_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """RLOO leave-one-out baseline (Kool et al. 2019; Ahmadian et al., arXiv 2402.14740):

        A_i = r_i - (1 / (G - 1)) * sum_{j != i} r_j  =  G / (G - 1) * (r_i - mean(r_group))

    A group of size 1 has no baseline and gets A = 0. ``eps`` is unused.
    """
    mean, _, count = group_stats(rewards, group_ids)
    loo = count / (count - 1).clamp_min(1) * (rewards - mean)
    return torch.where(count > 1, loo, torch.zeros_like(rewards))


def reinforce_pp_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """REINFORCE++ (Hu, arXiv 2501.03262): global batch normalisation, no critic, no groups:

        A_i = (r_i - mean(r_batch)) / (std(r_batch) + eps)

    (The paper also folds a per-token KL into the return; here KL enters through
    ``kl_in_reward`` before this call.) ``group_ids`` is unused.
    """
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    return (rewards - rewards.mean()) / (rewards.std() + eps)


def reinforce_pp_baseline_advantages(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """REINFORCE++-baseline (arXiv 2501.03262, v3+): subtract the group mean, then normalise by the
    batch std of the centred rewards:  A_i = c_i / (std(c_batch) + eps),  c_i = r_i - mean(r_group).
    """
    mean, _, _ = group_stats(rewards, group_ids)
    centred = rewards - mean
    if rewards.numel() < 2:
        return torch.zeros_like(rewards)
    return centred / (centred.std() + eps)


AdvantageFn = Callable[[Tensor, Tensor, float], Tensor]

ADVANTAGES: dict[str, AdvantageFn] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
}


def compute_advantages(name: str, rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """Advantages (N,) from rewards (N,) with the estimator ``name`` (a key of :data:`ADVANTAGES`).

    An unknown name raises ``ConfigError`` listing the valid ones.
    """
    fn = choose("advantage estimator", name, ADVANTAGES)
    return fn(rewards, group_ids.long(), eps)


def assign_advantages(samples: list[Sample], name: str = "grpo", eps: float = 1e-6) -> Tensor:
    """Compute advantages from ``sample.reward`` grouped by ``sample.group_id`` and store each in
    ``sample.advantage``; returns them as a float64 (N,) tensor. Samples with ``loss_mask=False``
    (e.g. overlong-filtered) still count in their group's statistics, as in DAPO."""
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float64)
    group_ids = torch.tensor([s.group_id for s in samples], dtype=torch.long)
    adv = compute_advantages(name, rewards, group_ids, eps)
    for s, a in zip(samples, adv.tolist()):
        s.advantage = a
    return adv
