"""GRPO / PPO per-token loss math in plain torch (shared by every backend and the references).

Per token (DeepSeekMath 2402.03300; clip-higher from DAPO 2503.14476):
    r    = exp(logp - old_logp)
    pg   = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high))
    k3   = exp(ref - logp) - (ref - logp) - 1                       (Schulman's k3 KL estimator)
    l    = pg + kl_coef * k3 - entropy_coef * entropy
Aggregation: loss = sum_t w_t l_t with weights w_t from ``token_weights`` (zero where mask = 0):
    token_mean            w = mask / sum(mask)
    seq_mean_token_mean   w = mask / (n_tokens(seq) * n_seqs)
    seq_mean_token_sum    w = mask / n_seqs
    constant_norm         w = mask / (n_seqs * max_response_len)   (Dr. GRPO, 2503.20783)
n_seqs counts the sequences with at least one mask token; a normaliser below 1 is taken as 1.
``denominator`` (at least 1e-12) replaces the global normaliser (sum(mask), n_seqs, n_seqs * max_response_len)
so that micro-batch losses sum to the global-batch loss.
"""

from __future__ import annotations

import torch

AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant_norm")


def _per_seq_tokens(m: torch.Tensor, seq_ids: torch.Tensor):
    """(mask tokens of each sequence (S,), each token's sequence index (T,))."""
    uniq, inv = torch.unique(seq_ids, return_inverse=True)
    return torch.zeros(uniq.numel(), dtype=m.dtype, device=m.device).index_add_(0, inv, m), inv


def token_weights(mask, agg="token_mean", seq_ids=None, denominator=None, max_response_len=None,
                  dtype=torch.float32) -> torch.Tensor:
    """Per-token aggregation weights (T,) in ``dtype`` such that loss = sum(w * l).

    n_seqs counts the sequences with at least one mask token; a normaliser below 1 (no mask
    token) is taken as 1, so an empty mask gives zero weights. The same definition as
    ``r1mega.algorithms.aggregation`` (kept separate so that this package stands alone; the
    r1mega tests pin the two together).
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"agg must be one of {AGGREGATIONS}, got {agg!r}")
    m = mask.to(dtype)
    if seq_ids is not None and seq_ids.shape != mask.shape:
        raise ValueError(f"seq_ids shape {tuple(seq_ids.shape)} must equal mask shape {tuple(mask.shape)}")
    if agg == "token_mean":
        denom = m.sum().clamp_min(1.0) if denominator is None else _given(denominator)
        return m / denom
    if agg == "seq_mean_token_mean":
        if seq_ids is None:
            raise ValueError("agg='seq_mean_token_mean' needs seq_ids (sequence index of each token)")
        per_seq, inv = _per_seq_tokens(m, seq_ids)
        denom = max(int((per_seq > 0).sum()), 1) if denominator is None else _given(denominator)
        return m / per_seq[inv].clamp_min(1.0) / denom
    if denominator is None:
        if seq_ids is None:
            raise ValueError(f"agg={agg!r} needs seq_ids (to count sequences) or an explicit denominator")
        per_seq, _ = _per_seq_tokens(m, seq_ids)
        n_seqs = int((per_seq > 0).sum())
        if agg == "constant_norm":
            if max_response_len is None:
                raise ValueError("agg='constant_norm' needs max_response_len (or an explicit denominator)")
            return m / max(n_seqs * float(max_response_len), 1.0)
        return m / max(n_seqs, 1)
    return m / _given(denominator)


def _given(denominator):
    """An explicit normaliser, kept away from 0 (an empty global batch gives zero weights, not NaN)."""
    return denominator.clamp_min(1e-12) if torch.is_tensor(denominator) else max(float(denominator), 1e-12)


def grpo_token_terms(logp, old_logp, advantages, ref_logp=None, entropy=None, *, clip_low=0.2, clip_high=0.2,
                     kl_coef=0.0, entropy_coef=0.0):
    """Per-token loss l (T,), dl/dlogp (T,), dl/dentropy (scalar float) and the pieces for stats."""
    logp = logp.float()
    adv = advantages.float()
    ratio = torch.exp(logp - old_logp.float())
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    pg1, pg2 = -adv * ratio, -adv * clipped
    use_clip = pg2 > pg1  # the clipped (constant) branch is active: no gradient through the ratio
    pg = torch.where(use_clip, pg2, pg1)
    loss = pg.clone()
    dlogp = torch.where(use_clip, torch.zeros_like(pg1), pg1)
    k3 = None
    if ref_logp is not None:
        d = ref_logp.float() - logp
        e = torch.exp(d)
        k3 = e - d - 1.0
        if kl_coef != 0.0:
            loss = loss + kl_coef * k3
            dlogp = dlogp + kl_coef * (1.0 - e)
    if entropy is not None and entropy_coef != 0.0:
        loss = loss - entropy_coef * entropy.float()
    parts = dict(pg=pg, k3=k3, use_clip=use_clip, ratio=ratio, clip_low=(ratio < 1.0 - clip_low) & use_clip,
                 clip_high=(ratio > 1.0 + clip_high) & use_clip)
    return loss, dlogp, -float(entropy_coef), parts


def stats_sums(mask, parts, entropy=None) -> torch.Tensor:
    """Masked sums (8,) fp32: n, pg, k3, entropy, clip, clip_low, clip_high, ratio (summable over chunks)."""
    m = mask.float()
    z = torch.zeros((), dtype=torch.float32, device=m.device)
    return torch.stack([
        m.sum(), (m * parts["pg"]).sum(),
        (m * parts["k3"]).sum() if parts["k3"] is not None else z,
        (m * entropy.float()).sum() if entropy is not None else z,
        (m * parts["use_clip"].float()).sum(), (m * parts["clip_low"].float()).sum(),
        (m * parts["clip_high"].float()).sum(), (m * parts["ratio"]).sum(),
    ])


def stats_from_sums(sums: torch.Tensor, loss: torch.Tensor, has_kl: bool, has_entropy: bool) -> dict:
    """Detached scalar stats: masked means over the tokens of this call."""
    sums = sums.detach()
    n = sums[0].clamp_min(1.0)
    out = {"loss": loss.detach(), "num_tokens": sums[0], "pg_loss": sums[1] / n, "clip_frac": sums[4] / n,
           "clip_frac_low": sums[5] / n, "clip_frac_high": sums[6] / n, "ratio_mean": sums[7] / n}
    if has_kl:
        out["kl"] = sums[2] / n
    if has_entropy:
        out["entropy"] = sums[3] / n
    return out
