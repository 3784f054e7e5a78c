"""KL divergence estimators to the reference policy, per token.

With log-ratio  l = logp - ref_logp  (= log pi_theta / pi_ref) on tokens sampled from pi_theta,
Schulman's estimators ("Approximating KL Divergence", 2020) of KL(pi_theta || pi_ref) are

    k1 = l                         unbiased, high variance, can be negative
    k2 = l^2 / 2                   biased, low variance, >= 0
    k3 = exp(-l) - (-l) - 1        unbiased, low variance, >= 0   (used by GRPO, arXiv 2402.03300)

Gradients w.r.t. logp:  dk1 = 1,  dk2 = l,  dk3 = 1 - exp(-l).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from r1mega.config.base import choose


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp (per token, same shape as inputs)."""
    return logp - ref_logp


def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = 0.5 * (logp - ref_logp)^2."""
    return 0.5 * (logp - ref_logp) ** 2


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = pi_ref/pi - log(pi_ref/pi) - 1 = exp(ref - logp) - (ref - logp) - 1 (GRPO's KL term)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_penalty(name: str, logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token KL estimate (B, T) with the estimator ``name`` ("k1", "k2", "k3")."""
    return choose("KL estimator", name, KL_ESTIMATORS)(logp, ref_logp)


def kl_in_reward(rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, kl_coef: float,
                 estimator: str = "k1") -> tuple[Tensor, Tensor]:
    """Fold the KL into the sequence reward (the InstructGPT / REINFORCE++ placement):

        r'_b = r_b - kl_coef * sum_t mask_bt * k(logp_bt, ref_logp_bt)

    rewards (B,), logp / ref_logp / mask (B, T) with logp the rollout-time (old) policy.
    Returns (new rewards (B,), per-sequence KL (B,)), both without gradient. Use it with
    ``AlgorithmConfig.kl_in_reward = True``; :func:`policy_loss` then adds no KL loss term.
    """
    with torch.no_grad():
        per_seq = (kl_penalty(estimator, logp, ref_logp) * mask.to(logp.dtype)).sum(dim=-1)  # (B,)
        return rewards - kl_coef * per_seq.to(rewards.dtype), per_seq
