"""Public entry points: ``linear_logprob``, ``linear_grpo_loss``, ``grpo_loss``.

``backend``: "auto" (triton when CUDA is available, else torch_chunked), "triton",
"torch_chunked" (pure torch, tiles over T and V: the CPU training path) or "eager"
(plain torch with full [T, V] logits: the reference; no tensor parallelism).
"""

from __future__ import annotations

import torch

from ._common import check_linear_inputs, check_targets_in_range, resolve_backend
from .grpo_loss import GRPOLossFunction
from .grpo_math import stats_from_sums, token_weights
from .linear_grpo import LinearGRPOFunction
from .linear_logprob import LinearLogprobFunction, check_schedule
from .reference import grpo_loss_eager, linear_grpo_loss_eager, linear_logprob_eager
from .vocab_parallel import default_vocab_start, global_vocab_size


def _check_temperature(temperature):
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_tokens(T, **named):
    for name, t in named.items():
        if t is not None and (t.dim() != 1 or t.shape[0] != T):
            raise ValueError(f"{name} must be [T] with T={T}, got shape {tuple(t.shape)}")


def _tp_setup(hidden, weight, targets, tp_group, vocab_start, backend):
    if tp_group is not None and backend == "eager":
        raise ValueError("backend='eager' does not support tp_group; use 'torch_chunked' or 'triton'")
    start = default_vocab_start(tp_group, weight.shape[0], vocab_start)
    check_targets_in_range(targets, global_vocab_size(tp_group, weight.shape[0]))
    return start


def linear_logprob(hidden, weight, targets, *, temperature=1.0, with_entropy=False, tp_group=None, vocab_start=None,
                   backend="auto", chunk_size=None, schedule="fused"):
    """Per-token log-probability of ``targets`` under softmax(hidden @ weight.T / temperature).

    hidden (T, H), weight (Vs, H) (the full head, or this TP rank's vocab shard starting at
    ``vocab_start``, default rank * Vs), targets (T,) global ids. Returns (logp (T,) fp32,
    entropy (T,) fp32 or None). Differentiable w.r.t. hidden and weight. With ``tp_group`` the
    forward all-gathers (4, T) statistics, the result equals TP=1 on every rank, dW is the local
    shard's gradient and dX (all-reduced in backward) is the full gradient on every rank.
    ``chunk_size``: tokens per chunk (int), or (tokens, vocab) tuple for torch_chunked.
    ``schedule`` (triton only): "fused" (fused forward kernel, cuBLAS-chunked deterministic
    backward; the default), "gemm" (cuBLAS logits chunks + row kernels both ways) or
    "fused_atomic" (fused kernels both ways, fp32 atomics in backward).
    """
    backend = resolve_backend(backend)
    check_linear_inputs(hidden, weight, targets)
    _check_temperature(temperature)
    start = _tp_setup(hidden, weight, targets, tp_group, vocab_start, backend)
    if backend == "eager":
        logp, ent = linear_logprob_eager(hidden, weight, targets, temperature=temperature, with_entropy=with_entropy)
        return logp, ent
    chunk_t = chunk_size[0] if isinstance(chunk_size, (tuple, list)) else chunk_size
    chunk_v = chunk_size[1] if isinstance(chunk_size, (tuple, list)) else None
    impl = "triton" if backend == "triton" else "torch_chunked"
    check_schedule(schedule)
    logp, ent = LinearLogprobFunction.apply(hidden, weight, targets, float(temperature), bool(with_entropy), tp_group,
                                            start, impl, (chunk_t, chunk_v), schedule)
    return logp, (ent if with_entropy else None)


def _grpo_common(T, old_logp, advantages, mask, ref_logp, seq_ids, agg, denominator, max_response_len):
    _check_tokens(T, old_logp=old_logp, advantages=advantages, mask=mask, ref_logp=ref_logp, seq_ids=seq_ids)
    wt = token_weights(mask, agg, seq_ids, denominator, max_response_len).float().contiguous()
    return wt, mask.float().contiguous()


def linear_grpo_loss(hidden, weight, targets, *, old_logp, advantages, mask, ref_logp=None, clip_low=0.2,
                     clip_high=0.2, kl_coef=0.0, entropy_coef=0.0, temperature=1.0, agg="token_mean", seq_ids=None,
                     denominator=None, max_response_len=None, tp_group=None, vocab_start=None, backend="auto",
                     chunk_size=None):
    """Fused LM head + GRPO loss. Returns (loss scalar fp32, stats dict).

    Per token: r = exp(logp - old_logp); pg = max(-A r, -A clip(r, 1-clip_low, 1+clip_high));
    ``old_logp=None``: on-policy, the old policy is this one (old_logp = logp detached, r = 1);
    l = pg + kl_coef * k3(logp, ref_logp) - entropy_coef * entropy; loss = sum_t w_t l_t with the
    aggregation weights of ``agg`` (see ``grpo_math.token_weights``). For triton/torch_chunked the
    gradients of hidden and weight are computed during forward (6 THV FLOP) and backward scales them.
    stats: loss, num_tokens, pg_loss, kl (if ref_logp), entropy, clip_frac(_low/_high), ratio_mean
    (masked means over this call's tokens), logp and entropy_per_token (T,) detached.
    """
    backend = resolve_backend(backend)
    check_linear_inputs(hidden, weight, targets)
    _check_temperature(temperature)
    T = hidden.shape[0]
    if backend == "eager":
        if tp_group is not None:
            raise ValueError("backend='eager' does not support tp_group; use 'torch_chunked' or 'triton'")
        return linear_grpo_loss_eager(hidden, weight, targets, old_logp=old_logp, advantages=advantages, mask=mask,
                                      ref_logp=ref_logp, clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef,
                                      entropy_coef=entropy_coef, temperature=temperature, agg=agg, seq_ids=seq_ids,
                                      denominator=denominator, max_response_len=max_response_len)
    wt, maskf = _grpo_common(T, old_logp, advantages, mask, ref_logp, seq_ids, agg, denominator, max_response_len)
    start = _tp_setup(hidden, weight, targets, tp_group, vocab_start, backend)
    cfg = dict(clip_low=float(clip_low), clip_high=float(clip_high), kl_coef=float(kl_coef),
               entropy_coef=float(entropy_coef), inv_temp=1.0 / float(temperature), tp_group=tp_group,
               vocab_start=start, impl="triton" if backend == "triton" else "torch_chunked", chunk_t=chunk_size)
    old = None if old_logp is None else old_logp.float()
    loss, sums, logp, ent = LinearGRPOFunction.apply(hidden, weight, targets, old, advantages.float(),
                                                     None if ref_logp is None else ref_logp.float(), wt, maskf, cfg)
    stats = stats_from_sums(sums, loss, ref_logp is not None, True)
    stats["logp"], stats["entropy_per_token"] = logp, ent
    return loss, stats


def linear_nll_loss(hidden, weight, targets, *, mask, denominator, temperature=1.0, tp_group=None, vocab_start=None,
                    backend="auto", chunk_size=None):
    """Fused LM head + negative log-likelihood (SFT): loss = -sum_t mask_t logp_t / denominator.
    Returns (loss scalar fp32, logp (T,) fp32 detached).

    For triton/torch_chunked the gradients are made during forward (6 THV FLOP, no logits
    recompute) by the fused GRPO kernel on-policy with advantages 1: there r = 1 and
    dl/dlogp_t = -w_t = -mask_t / denominator, exactly the NLL's gradient. The kernel's own loss
    value is then the constant -sum(w); the returned loss carries the NLL's value on top of the
    kernel's gradient.
    """
    backend = resolve_backend(backend)
    if backend == "eager":
        if tp_group is not None:
            raise ValueError("backend='eager' does not support tp_group; use 'torch_chunked' or 'triton'")
        logp, _ = linear_logprob_eager(hidden, weight, targets, temperature=temperature)
        return -(logp.float() * mask.float()).sum() / denominator, logp.detach().float()
    ones = torch.ones(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    grad_loss, st = linear_grpo_loss(hidden, weight, targets, old_logp=None, advantages=ones, mask=mask,
                                     temperature=temperature, agg="token_mean", denominator=denominator,
                                     tp_group=tp_group, vocab_start=vocab_start, backend=backend, chunk_size=chunk_size)
    nll = -(st["logp"] * mask.float()).sum() / denominator
    return grad_loss + (nll - grad_loss.detach()), st["logp"]


def grpo_loss(logp, old_logp, advantages, mask, *, ref_logp=None, entropy=None, clip_low=0.2, clip_high=0.2,
              kl_coef=0.0, entropy_coef=0.0, agg="token_mean", seq_ids=None, denominator=None, max_response_len=None,
              backend="auto"):
    """GRPO loss on precomputed logprobs (T,) (and optionally entropy (T,) for the entropy bonus).

    Same math and arguments as ``linear_grpo_loss``; differentiable w.r.t. logp and entropy.
    The triton backend is one kernel launch forward and one backward. Returns (loss, stats).
    """
    backend = resolve_backend(backend)
    if logp.dim() != 1:
        raise ValueError(f"logp must be flattened to [T], got shape {tuple(logp.shape)}")
    T = logp.shape[0]
    _check_tokens(T, entropy=entropy)
    if backend == "eager":
        return grpo_loss_eager(logp, old_logp, advantages, mask, ref_logp=ref_logp, entropy=entropy,
                               clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef, entropy_coef=entropy_coef,
                               agg=agg, seq_ids=seq_ids, denominator=denominator, max_response_len=max_response_len)
    wt, maskf = _grpo_common(T, old_logp, advantages, mask, ref_logp, seq_ids, agg, denominator, max_response_len)
    impl = "triton" if backend == "triton" else "torch"
    c = lambda t: None if t is None else t.contiguous()  # noqa: E731
    loss, sums = GRPOLossFunction.apply(c(logp), c(entropy), c(old_logp), c(advantages), c(ref_logp), wt, maskf,
                                        float(clip_low), float(clip_high), float(kl_coef), float(entropy_coef), impl)
    return loss, stats_from_sums(sums, loss, ref_logp is not None, entropy is not None)
