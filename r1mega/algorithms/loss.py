"""Per-token PPO/GRPO policy loss with clip-higher, dual clip, KL, entropy and TIS correction.

Shapes: B sequences, T response positions (padded); ``mask`` (B, T) is 1 on response tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from r1mega.algorithms.aggregation import aggregate
from r1mega.algorithms.config import AlgorithmConfig
from r1mega.algorithms.kl import kl_penalty


def clipped_pg_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, clip_low: float = 0.2,
                    clip_high: float = 0.2, dual_clip: float | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """PPO clipped surrogate, per token, as a loss (to minimise):

        ratio = exp(logp - old_logp)
        l     = max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))

    PPO (Schulman et al., arXiv 1707.06347) with GRPO's per-token form (arXiv 2402.03300) and
    DAPO's decoupled clip-higher (clip_high > clip_low, arXiv 2503.14476). With ``dual_clip = c > 1``
    (Ye et al., arXiv 1912.09729) tokens with A < 0 have their loss capped: l = min(l, -c * A), so a
    huge ratio on a bad token cannot blow up the update.

    logp, old_logp (B, T); advantages (B, T) or broadcastable. Returns (loss (B, T),
    clipped (B, T) bool: the clipped branch is active (zero gradient), dual_clipped (B, T) bool).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    is_dual = torch.zeros_like(is_clipped)
    if dual_clip is not None:
        cap = -advantages * dual_clip
        is_dual = (advantages < 0) & (loss > cap)
        loss = torch.where(is_dual, cap, loss)
    return loss, is_clipped, is_dual


def tis_weights(old_logp: Tensor, rollout_logp: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights between the trainer and the rollout engine, per token:

        w = min(pi_old / pi_rollout, C) = min(exp(old_logp - rollout_logp), C)     (no gradient)

    Tokens were sampled by the rollout engine (vLLM, possibly stale or numerically different), but
    the PPO ratio uses the trainer's old logprobs; multiplying the policy-gradient term by w corrects
    the mismatch, with the cap bounding the variance (truncated IS as in IMPALA/V-trace, arXiv
    1802.01561; applied to engine mismatch by Yao et al. 2025, "Your Efficient RL Framework
    Secretly Brings You Off-Policy RL Training").
    """
    with torch.no_grad():
        return torch.exp(old_logp - rollout_logp).clamp(max=cap)


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(x.dtype)
    return ((x * m).sum() / m.sum().clamp_min(1)).detach()


def policy_loss(logp: Tensor, old_logp: Tensor | None, advantages: Tensor, mask: Tensor, cfg: AlgorithmConfig,
                ref_logp: Tensor | None = None, entropy: Tensor | None = None,
                rollout_logp: Tensor | None = None, max_response_len: int | None = None,
                denominator: float | Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """The full per-token objective, aggregated with ``cfg.loss_agg``:

        l_bt = w_bt * pg_bt  +  kl_coef * k(logp, ref)_bt  -  entropy_coef * H_bt
        loss = aggregate(cfg.loss_agg, l, mask, max_response_len, denominator)

    pg from :func:`clipped_pg_loss`; w from :func:`tis_weights` when ``cfg.tis_cap`` is set and
    ``rollout_logp`` is given, or from :func:`r1mega.algorithms.offpolicy.importance_weights` when
    ``cfg.rollout_is`` is (TIS or MIS at token, sequence or geometric level; MIS-dropped tokens get
    w = 0 and stay in the normaliser), else 1; the KL term is added only when ``kl_coef > 0``, ``ref_logp``
    is given and ``cfg.kl_in_reward`` is False (the GRPO placement, arXiv 2402.03300); the entropy
    term only when ``entropy`` (B, T) is given and ``entropy_coef > 0``.

    logp (B, T) carries the gradient; old_logp, ref_logp, rollout_logp (B, T) are constants
    (``old_logp=None``: on-policy, one update per batch: the old policy is the current one, so
    old_logp = logp detached and the ratio is 1);
    advantages (B,) or (B, T). Returns (loss, stats): detached scalars ``pg_loss`` (aggregated like
    the loss), and masked token means ``clip_frac``, ``ratio_mean``, and when applicable
    ``dual_clip_frac``, ``kl``, ``entropy``, ``tis_weight_mean``, ``is_weight_mean`` (over the kept
    tokens), ``is_masked_frac``.
    """
    if old_logp is None:
        old_logp = logp.detach()
    if logp.shape != mask.shape or old_logp.shape != mask.shape:
        raise ValueError(f"logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)} and mask "
                         f"{tuple(mask.shape)} must all be (B, T)")
    if advantages.dim() == 1:
        advantages = advantages[:, None]                                  # (B,) -> (B, 1)
    advantages = advantages.to(logp.dtype).detach()
    old_logp = old_logp.detach()

    pg, is_clipped, is_dual = clipped_pg_loss(logp, old_logp, advantages, cfg.clip_low, cfg.clip_high, cfg.dual_clip)
    stats: dict[str, Tensor] = {}
    if cfg.tis_cap is not None and rollout_logp is not None:
        w = tis_weights(old_logp, rollout_logp.detach(), cfg.tis_cap)
        pg = pg * w
        stats["tis_weight_mean"] = _masked_mean(w, mask)
    elif cfg.rollout_is is not None and rollout_logp is not None:
        from r1mega.algorithms.offpolicy import importance_weights  # here: offpolicy imports this module
        bounds = dict(cap=cfg.rollout_is_upper) if cfg.rollout_is == "truncate" else \
            dict(lower=cfg.rollout_is_lower, upper=cfg.rollout_is_upper)
        w, kept = importance_weights(old_logp, rollout_logp, mask, level=cfg.rollout_is_level, mode=cfg.rollout_is,
                                     **bounds)
        pg = pg * w  # dropped tokens weigh 0 and stay in the (global) normaliser
        stats["is_weight_mean"] = _masked_mean(w, kept)
        stats["is_masked_frac"] = 1.0 - _masked_mean(kept.to(logp.dtype), mask)
    per_token = pg
    stats["pg_loss"] = aggregate(cfg.loss_agg, pg.detach(), mask, max_response_len, denominator)
    if ref_logp is not None:
        kl = kl_penalty(cfg.kl_estimator, logp, ref_logp.detach())
        stats["kl"] = _masked_mean(kl, mask)
        if cfg.kl_coef > 0 and not cfg.kl_in_reward:
            per_token = per_token + cfg.kl_coef * kl
    if entropy is not None:
        stats["entropy"] = _masked_mean(entropy, mask)
        if cfg.entropy_coef > 0:
            per_token = per_token - cfg.entropy_coef * entropy
    loss = aggregate(cfg.loss_agg, per_token, mask, max_response_len, denominator)
    stats["clip_frac"] = _masked_mean(is_clipped.to(logp.dtype), mask)
    if cfg.dual_clip is not None:
        stats["dual_clip_frac"] = _masked_mean(is_dual.to(logp.dtype), mask)
    stats["ratio_mean"] = _masked_mean(torch.exp(logp - old_logp), mask)
    return loss, stats
