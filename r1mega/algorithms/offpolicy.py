"""Off-policy corrections for partial-rollout and asynchronous RL, as pure tensor functions.

Three policies meet in one training step:

    pi_behav   the behaviour policy: the rollout engine that sampled the tokens, possibly several
               weight versions behind (asynchronous RL) or several versions within one sequence
               (partial / interruptible rollouts), and numerically different from the trainer even
               at the same version (vLLM vs Megatron kernels, bf16 vs fp32);
    pi_prox    the proximal policy: the trainer's policy at the start of the step (the "old"
               policy of PPO), whose logprobs the trainer recomputes;
    pi_theta   the current policy, being optimised (``logp`` carries the gradient).

Shapes: B sequences, T response positions (padded), as in :mod:`r1mega.algorithms.loss`;
``mask`` (B, T) is 1 on response tokens (float or bool). All weights are constants (no gradient).
Every function returns per-token tensors (B, T) or plain floats: the caller reduces the loss with
:func:`r1mega.algorithms.aggregation.aggregate`, as for the on-policy loss.

Conventions for dropped tokens (padding, or tokens rejected by a mask-mode correction): their
weight is exactly 0 and they are 0 in the returned mask. Aggregating ``w * l`` with the *original*
mask then keeps the dropped tokens in the normaliser (AReaL's choice); aggregating with the
*returned* mask renormalises over the kept tokens (veRL's rejection-sampling choice). Values at
padding positions never matter, even inf or NaN.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from r1mega.algorithms.loss import clipped_pg_loss, tis_weights
from r1mega.config.base import choose

IS_MODES = ("truncate", "mask")


def _selected(mask: Tensor) -> Tensor:
    return mask > 0


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(x.shape) for name, x in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        listed = ", ".join(f"{name} {s}" for name, s in shapes.items())
        raise ValueError(f"{listed}: must all be the same (B, T) shape")


def _token_log_weight(d: Tensor, sel: Tensor) -> Tensor:
    return d


def _sequence_log_weight(d: Tensor, sel: Tensor) -> Tensor:
    return d.sum(dim=-1, keepdim=True).expand_as(d)                    # (B, 1) -> (B, T)


def _geometric_log_weight(d: Tensor, sel: Tensor) -> Tensor:
    n = sel.sum(dim=-1, keepdim=True).clamp_min(1)
    return (d.sum(dim=-1, keepdim=True) / n).expand_as(d)


# level -> log w (B, T) from the masked per-token log ratio d (0 on padding) and the selection.
IS_LEVELS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "token": _token_log_weight,
    "sequence": _sequence_log_weight,
    "geometric": _geometric_log_weight,
}


def _check_is_args(mode: str, cap: float | None, lower: float | None, upper: float | None) -> None:
    if mode not in IS_MODES:
        raise ValueError(f"mode={mode!r}: must be one of {', '.join(repr(m) for m in IS_MODES)}")
    if mode == "truncate":
        if cap is None or not cap > 0:
            raise ValueError(f"cap={cap!r}: mode='truncate' needs a cap > 0")
        if lower is not None or upper is not None:
            raise ValueError(f"lower={lower!r}, upper={upper!r}: mode='truncate' takes only cap "
                             f"(lower and upper must be None; use mode='mask' to drop tokens)")
        return
    if cap is not None:
        raise ValueError(f"cap={cap!r}: mode='mask' takes lower and upper, not cap (cap must be None)")
    if upper is None or not upper > 0 or math.isinf(upper):
        raise ValueError(f"upper={upper!r}: mode='mask' needs a finite upper bound > 0")
    if lower is not None and not 0 <= lower <= upper:
        raise ValueError(f"lower={lower!r}: must be None or satisfy 0 <= lower <= upper (upper={upper!r})")


def importance_weights(logp: Tensor, behav_logp: Tensor, mask: Tensor, *, level: str = "token",
                       mode: str = "truncate", cap: float | None = None, lower: float | None = None,
                       upper: float | None = None) -> tuple[Tensor, Tensor]:
    """Importance weights pi / pi_behav of the rollout (behaviour) policy, truncated or masked.

    ``logp`` is the policy the loss is taken under (usually the trainer's recomputed old /
    proximal logprobs, as for ``AlgorithmConfig.tis_cap``; only its values are used, never its
    gradient), ``behav_logp`` the rollout engine's logprobs of the sampled tokens. With the masked
    log ratio d_bt = mask_bt * (logp_bt - behav_logp_bt), the log weight at each ``level`` is

        "token"       log w_bt = d_bt                                   (per-token ratio)
        "sequence"    log w_bt = sum_t' d_bt'                           (the sequence likelihood
                                                                         ratio, on every token)
        "geometric"   log w_bt = sum_t' d_bt' / n_b                     (its geometric mean per
                                                                         token, n_b = mask tokens)

    The sequence ratio is the unbiased correction for a sequence-level reward but its variance
    grows with the length; the geometric mean is length-normalised (biased, low variance; the
    same normalisation as GSPO's sequence ratio, arXiv 2507.18071). Then with ``mode``:

        "truncate"  (TIS)  w = min(exp(log w), cap)               new_mask = mask
        "mask"      (MIS)  keep = lower <= exp(log w) <= upper    (bounds inclusive; lower None: 0)
                           w = exp(log w) on kept tokens          new_mask = mask * keep

    so MIS drops the token (level "token") or the whole sequence (levels "sequence" and
    "geometric") whose weight leaves [lower, upper] from the loss, and keeps the untruncated
    weight elsewhere. Weights are 0 wherever ``new_mask`` is 0 (padding and dropped tokens).
    Truncation and the bounds are applied in log space, so a long sequence cannot overflow.

    References: truncated IS of the trainer-vs-engine mismatch, token level, from Yao et al.
    2025, "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training" (the truncation
    of IMPALA's V-trace, arXiv 1802.01561; "token"/"truncate" is exactly
    :func:`r1mega.algorithms.loss.tis_weights`); masked IS and the sequence / geometric levels
    from Liu, Li et al. 2025, "When Speed Kills Stability: Demystifying RL Collapse from the
    Inference-Training Mismatch", as exposed by veRL's rollout correction (a level among token,
    sequence, geometric; a mode among truncate, mask; an upper and a lower threshold).

    logp, behav_logp, mask (B, T). Returns (weights (B, T) in logp's dtype, detached;
    new_mask (B, T) in mask's dtype).
    """
    _check_same_shape(logp=logp, behav_logp=behav_logp, mask=mask)
    level_fn = choose("importance_weights level", level, IS_LEVELS)
    _check_is_args(mode, cap, lower, upper)
    with torch.no_grad():
        work = torch.promote_types(logp.dtype, torch.float32)
        sel = _selected(mask)
        d = torch.where(sel, logp.detach().to(work) - behav_logp.detach().to(work), 0.0)
        log_w = level_fn(d, sel)
        if mode == "truncate":
            w = tis_weights(log_w, torch.zeros_like(log_w), cap)        # min(exp(log_w - 0), cap)
            new_mask = mask.clone()
        else:
            keep = log_w <= math.log(upper)
            if lower is not None and lower > 0:
                keep &= log_w >= math.log(lower)
            w = torch.exp(torch.where(keep, log_w, 0.0))
            new_mask = torch.where(keep, mask, torch.zeros_like(mask))
        w = torch.where(_selected(new_mask), w, 0.0).to(logp.dtype)
    return w, new_mask


def decoupled_ppo_loss(logp: Tensor, prox_logp: Tensor, behav_logp: Tensor, advantages: Tensor, mask: Tensor,
                       clip_low: float = 0.2, clip_high: float = 0.2, *, dual_clip: float | None = None,
                       behav_cap: float | None = None, behav_cap_mode: str = "mask") -> tuple[Tensor, dict[str, Tensor]]:
    """AReaL's decoupled PPO objective, per token, as a loss (to minimise):

        w = exp(prox_logp - behav_logp)                      (behaviour -> proximal, no gradient)
        r = exp(logp - prox_logp)                            (proximal -> current)
        l = w * max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))
          = -w * min(r * A, clip(r, 1 - clip_low, 1 + clip_high) * A)

    Fu et al., "AReaL: A Large-Scale Asynchronous Reinforcement Learning System for Language
    Reasoning" (arXiv 2505.24298): the tokens come from stale / mixed-version behaviour policies,
    but the trust region is centred on the proximal policy (the trainer's policy at the start of
    the step), and the importance weight w corrects the sampling distribution. The clipped term is
    :func:`r1mega.algorithms.loss.clipped_pg_loss` with old_logp = prox_logp (so DAPO clip-higher
    and ``dual_clip`` apply as there), and when ``prox_logp == behav_logp`` (and behav_cap is None
    or >= 1) w = 1 and l is bit-for-bit that standard loss on the response tokens (0 on padding). ``policy_loss`` with ``tis_cap`` is the special case
    prox = old, behav = rollout, ``behav_cap = tis_cap``, ``behav_cap_mode = "truncate"``.

    The cap. w is unbounded when a token was much less likely under the behaviour policy;
    ``behav_cap = C`` (None: no cap) bounds it, via :func:`importance_weights` at token level:
    ``behav_cap_mode="mask"`` (the default, AReaL's behaviour) drops tokens with w > C (weight 0,
    0 in ``parts["mask"]``), ``"truncate"`` uses min(w, C) (Yao et al.'s TIS). Without a cap, w
    may overflow to inf on an extreme token: set a cap in production.

    logp (B, T) carries the gradient: d l / d logp = -w * A * r on unclipped tokens, 0 on clipped
    ones. prox_logp, behav_logp (B, T) and advantages (B,) or (B, T) are constants (detached).
    Returns (loss (B, T), 0 on padding and dropped tokens; parts: ``weight`` w (B, T) detached
    and 0 where dropped, ``mask`` (B, T) the mask without dropped tokens, ``ratio`` r (B, T)
    detached, ``clipped`` and ``dual_clipped`` (B, T) bool as from clipped_pg_loss). Aggregate
    with ``aggregate(cfg.loss_agg, loss, mask)`` to keep dropped tokens in the normaliser, as AReaL
    does, or with ``parts["mask"]`` to renormalise over the kept tokens.
    """
    _check_same_shape(logp=logp, prox_logp=prox_logp, behav_logp=behav_logp, mask=mask)
    if not 0 <= clip_low < 1:
        raise ValueError(f"clip_low={clip_low!r}: must be in [0, 1) so that 1 - clip_low > 0")
    if not clip_high >= 0:
        raise ValueError(f"clip_high={clip_high!r}: must be >= 0")
    if dual_clip is not None and not dual_clip > 1:
        raise ValueError(f"dual_clip={dual_clip!r}: must be > 1 (or None to disable)")
    if behav_cap is not None and not behav_cap > 0:
        raise ValueError(f"behav_cap={behav_cap!r}: must be > 0 (or None for no cap)")
    if behav_cap_mode not in IS_MODES:
        raise ValueError(f"behav_cap_mode={behav_cap_mode!r}: must be one of {', '.join(repr(m) for m in IS_MODES)}")
    if tuple(advantages.shape) not in ((mask.shape[0],), tuple(mask.shape)):
        raise ValueError(f"advantages {tuple(advantages.shape)}: must be (B,) or (B, T) with (B, T) = "
                         f"{tuple(mask.shape)}")
    if advantages.dim() == 1:
        advantages = advantages[:, None]                                 # (B,) -> (B, 1)

    if behav_cap is None:
        w, kept = importance_weights(prox_logp, behav_logp, mask, mode="truncate", cap=math.inf)
    elif behav_cap_mode == "truncate":
        w, kept = importance_weights(prox_logp, behav_logp, mask, mode="truncate", cap=behav_cap)
    else:
        w, kept = importance_weights(prox_logp, behav_logp, mask, mode="mask", upper=behav_cap)
    # Padding may hold anything (inf, NaN): give it ratio 1 and A = 0 so that neither the loss
    # nor the gradient can pick a non-finite value up there; mask tokens are untouched.
    sel = _selected(mask)
    prox = torch.where(sel, prox_logp.detach(), 0.0)
    current = torch.where(sel, logp, 0.0)
    adv = torch.where(sel, advantages.detach().to(logp.dtype), 0.0)
    pg, is_clipped, is_dual = clipped_pg_loss(current, prox, adv, clip_low, clip_high, dual_clip)
    loss = w * pg
    parts = {"weight": w, "mask": kept, "ratio": torch.exp(current - prox).detach(),
             "clipped": is_clipped & sel, "dual_clipped": is_dual & sel}
    return loss, parts


def offpolicy_metrics(versions: Tensor | Sequence[int], current_version: int, weights: Tensor, mask: Tensor,
                      new_mask: Tensor, *, cap: float | None = None, max_lag: int = 8) -> dict[str, float]:
    """Per-step diagnostics of staleness and importance weights, as plain floats.

    Staleness. lag = current_version - versions: how many weight updates behind the policy that
    generated the data is. ``versions`` (B,) gives one version per sample, counted over the samples
    with at least one mask token (a fully masked row is not in the loss); (B, T) gives one per
    token (partial rollouts: a sequence resumed after a weight update mixes versions), counted over
    the mask tokens. Keys: ``offpolicy/staleness_lag_k`` for k = 0 .. max_lag - 1 and
    ``offpolicy/staleness_lag_{max_lag}+`` (counts), ``offpolicy/staleness_mean``,
    ``offpolicy/staleness_max``.

    Importance weights (``weights``, ``new_mask`` from :func:`importance_weights` or the
    ``weight``/``mask`` parts of :func:`decoupled_ppo_loss`), over the kept tokens (new_mask):
    ``offpolicy/is_weight_mean``, ``_min``, ``_max``, ``_std`` (population std; all 0 when no
    token is kept). Shares of the response tokens (mask):
    ``offpolicy/is_masked_frac`` = 1 - sum(new_mask) / sum(mask), dropped by MIS, and
    ``offpolicy/is_truncated_frac`` = #(kept tokens with weight >= cap) / sum(mask), truncated by
    TIS (``cap``: the cap the weights were truncated at; None: 0). Empty masks give 0, never NaN.
    """
    if not isinstance(max_lag, int) or max_lag < 1:
        raise ValueError(f"max_lag={max_lag!r}: must be an int >= 1")
    if cap is not None and not cap > 0:
        raise ValueError(f"cap={cap!r}: must be > 0 (or None)")
    _check_same_shape(weights=weights, mask=mask, new_mask=new_mask)
    versions = torch.as_tensor(versions, device=mask.device)
    if versions.is_floating_point() or versions.dtype == torch.bool or versions.is_complex():
        raise ValueError(f"versions: must hold integer policy versions, got dtype {versions.dtype}")
    B, T = mask.shape
    sel = _selected(mask)
    if tuple(versions.shape) == (B,):
        lag = (current_version - versions)[sel.any(dim=-1)]
    elif tuple(versions.shape) == (B, T):
        lag = (current_version - versions)[sel]
    else:
        raise ValueError(f"versions {tuple(versions.shape)}: must be (B,) or (B, T) with (B, T) = {(B, T)}")
    if (lag < 0).any():
        raise ValueError(f"versions: must all be <= current_version={current_version} "
                         f"(max version {int(versions.max())})")

    out = staleness_metrics(lag, max_lag=max_lag)
    kept = _selected(new_mask)
    w = weights.detach().double()[kept]
    if w.numel():
        out["offpolicy/is_weight_mean"] = float(w.mean())
        out["offpolicy/is_weight_min"] = float(w.min())
        out["offpolicy/is_weight_max"] = float(w.max())
        out["offpolicy/is_weight_std"] = float(w.std(unbiased=False))
    else:
        out.update({f"offpolicy/is_weight_{s}": 0.0 for s in ("mean", "min", "max", "std")})
    n = float(sel.sum())
    out["offpolicy/is_masked_frac"] = (n - float(kept.sum())) / n if n else 0.0
    truncated = float((kept & (weights.detach() >= cap)).sum()) if cap is not None else 0.0
    out["offpolicy/is_truncated_frac"] = truncated / n if n else 0.0
    return out


def staleness_metrics(lag: Tensor | Sequence[int], *, max_lag: int = 8) -> dict[str, float]:
    """The staleness part of :func:`offpolicy_metrics` from the lags themselves (N,): one per
    counted token or sample, each the number of policy updates between the version that generated
    it and the one being trained (>= 0). Keys: ``offpolicy/staleness_lag_k`` (k < max_lag),
    ``offpolicy/staleness_lag_{max_lag}+`` (counts), ``offpolicy/staleness_mean``, ``_max``
    (0 when empty)."""
    if not isinstance(max_lag, int) or max_lag < 1:
        raise ValueError(f"max_lag={max_lag!r}: must be an int >= 1")
    lag = torch.as_tensor(lag, dtype=torch.long).reshape(-1)
    if (lag < 0).any():
        raise ValueError(f"lag: must be >= 0 (a token newer than the policy being trained), got min {int(lag.min())}")
    out: dict[str, float] = {}
    hist = torch.bincount(lag.clamp(max=max_lag), minlength=max_lag + 1)
    for k in range(max_lag):
        out[f"offpolicy/staleness_lag_{k}"] = float(hist[k])
    out[f"offpolicy/staleness_lag_{max_lag}+"] = float(hist[max_lag])
    out["offpolicy/staleness_mean"] = float(lag.double().mean()) if lag.numel() else 0.0
    out["offpolicy/staleness_max"] = float(lag.max()) if lag.numel() else 0.0
    return out
