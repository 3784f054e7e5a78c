"""Plain eager torch references (materialise the full [T, V] logits; autograd does backward).

These are the test oracles (run them in float64) and the ``backend="eager"`` path.
They take any float dtype, including float64, and compute in ``compute_dtype``
(default: float32, or float64 when the inputs are float64).
"""

from __future__ import annotations

import torch

from .grpo_math import stats_from_sums, stats_sums, token_weights


def _cdt(t, compute_dtype):
    if compute_dtype is not None:
        return compute_dtype
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def linear_logprob_eager(hidden, weight, targets, *, temperature=1.0, with_entropy=False, compute_dtype=None):
    """log_softmax(hidden @ weight.T / temperature)[t, targets[t]] and the entropy, via [T, V] logits."""
    cdt = _cdt(hidden, compute_dtype)
    logits = (hidden.to(cdt) @ weight.to(cdt).T) / temperature  # (T, V)
    logprobs = torch.log_softmax(logits, dim=-1)  # (T, V)
    logp = logprobs.gather(1, targets.long()[:, None])[:, 0]
    entropy = -(logprobs.exp() * logprobs).sum(-1) if with_entropy else None
    return logp, entropy


def grpo_loss_eager(logp, old_logp, advantages, mask, *, ref_logp=None, entropy=None, clip_low=0.2, clip_high=0.2,
                    kl_coef=0.0, entropy_coef=0.0, agg="token_mean", seq_ids=None, denominator=None,
                    max_response_len=None, compute_dtype=None):
    """GRPO loss written the obvious way (autograd through max/clamp/exp)."""
    cdt = _cdt(logp, compute_dtype)
    lp, adv = logp.to(cdt), advantages.to(cdt)
    ratio = torch.exp(lp - old_logp.to(cdt))
    pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high))
    loss_tok = pg
    k3 = None
    if ref_logp is not None:
        d = ref_logp.to(cdt) - lp
        k3 = torch.exp(d) - d - 1
        loss_tok = loss_tok + kl_coef * k3
    if entropy is not None:
        loss_tok = loss_tok - entropy_coef * entropy.to(cdt)
    w = token_weights(mask, agg, seq_ids, denominator, max_response_len).to(cdt)
    loss = (w * loss_tok).sum()
    with torch.no_grad():
        pg1, pg2 = -adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high)
        use_clip = pg2 > pg1
        parts = dict(pg=pg.float(), k3=None if k3 is None else k3.float(), use_clip=use_clip, ratio=ratio.float(),
                     clip_low=(ratio < 1 - clip_low) & use_clip, clip_high=(ratio > 1 + clip_high) & use_clip)
        sums = stats_sums(mask, parts, None if entropy is None else entropy.detach())
    stats = stats_from_sums(sums, loss, ref_logp is not None, entropy is not None)
    return loss, stats


def linear_grpo_loss_eager(hidden, weight, targets, *, old_logp, advantages, mask, ref_logp=None, clip_low=0.2,
                           clip_high=0.2, kl_coef=0.0, entropy_coef=0.0, temperature=1.0, agg="token_mean",
                           seq_ids=None, denominator=None, max_response_len=None, compute_dtype=None):
    """Eager logprob + entropy from full logits, then ``grpo_loss_eager``."""
    logp, entropy = linear_logprob_eager(hidden, weight, targets, temperature=temperature, with_entropy=True,
                                         compute_dtype=compute_dtype)
    old = logp.detach() if old_logp is None else old_logp  # None: on-policy (the current policy is the old one)
    loss, stats = grpo_loss_eager(logp, old, advantages, mask, ref_logp=ref_logp, entropy=entropy,
                                  clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef,
                                  entropy_coef=entropy_coef, agg=agg, seq_ids=seq_ids, denominator=denominator,
                                  max_response_len=max_response_len, compute_dtype=compute_dtype)
    stats["logp"] = logp.detach().float()
    stats["entropy_per_token"] = entropy.detach().float()
    return loss, stats
