"""Fused linear GRPO loss: LM head + log-softmax + entropy + GRPO loss, gradients made in forward.

The GRPO upstream gradient dL/dlogp_t depends only on inputs (advantages, old/ref logprobs,
mask, aggregation weights) and on logp_t itself, so forward can finish the job: per chunk of
tokens (T_c rows, all Vs columns of this rank's shard)

    Z   = X_c W^T                      (fp32 logits tile [T_c, Vs]; 2 T_c H V FLOP)
    row stats -> (TP all-gather of (4, T_c)) -> lse, logp, entropy -> per-token GRPO terms
    Z  := dL/dlogits in place          (row kernel)
    dX_c = Z W,  dW += Z^T X_c         (4 T_c H V FLOP)

6 THV FLOP in all instead of 8 (no logits recompute); peak extra memory O(T_c x Vs), flat in T.
Backward only scales the stored dX, dW by the incoming gradient. dX is all-reduced over the TP
group once at the end (every rank gets the full gradient of the replicated hidden states).

Layers: Triton row kernels (``logits_rows``: stats, grad-in-place) -> ``linear_grpo_forward`` driver
(shared with the torch row ops: backend ``torch_chunked``) -> ``LinearGRPOFunction``.
Reference: ``reference.linear_grpo_loss_eager``.
"""

from __future__ import annotations

import torch

from ._common import HAS_TRITON, check_triton_device, finalize_stats, logits_grad_gemms, mm_f32
from .chunked import default_chunk_tokens
from .grpo_math import grpo_token_terms, stats_sums
from .logits_rows import torch_row_grad_, torch_row_stats, triton_row_grad_, triton_row_stats
from .reference import linear_grpo_loss_eager  # noqa: F401  (the reference, importable beside the kernel)
from .vocab_parallel import allreduce_dx, combine_across_tp


def linear_grpo_forward(x, w, targets, old_logp, adv, ref_logp, wt, mask, *, clip_low, clip_high, kl_coef,
                        entropy_coef, inv_temp, tp_group, vocab_start, impl, chunk_t=None, need_dx=True,
                        need_dw=True):
    """-> loss (scalar fp32), stat sums (8,), logp (T,), entropy (T,), dX fp32 or None, dW fp32 or None."""
    if impl == "triton":
        if not HAS_TRITON:
            raise RuntimeError("triton is not installed; use backend='torch_chunked'")
        check_triton_device(x, w)
        row_stats, row_grad_ = triton_row_stats, triton_row_grad_
    else:
        row_stats, row_grad_ = torch_row_stats, torch_row_grad_
    T, H = x.shape
    Vs = w.shape[0]
    chunk_t = default_chunk_tokens(T, Vs, x.device, chunk_t)
    dev = x.device
    dx = torch.empty(T, H, dtype=torch.float32, device=dev) if need_dx else None
    dw = torch.zeros(Vs, H, dtype=torch.float32, device=dev) if need_dw else None
    logp_all = torch.empty(T, dtype=torch.float32, device=dev)
    ent_all = torch.empty(T, dtype=torch.float32, device=dev)
    loss = torch.zeros((), dtype=torch.float32, device=dev)
    sums = torch.zeros(8, dtype=torch.float32, device=dev)
    tgt_all = targets.contiguous()
    for t0 in range(0, T, chunk_t):
        t1 = min(T, t0 + chunk_t)
        xc, tgt = x[t0:t1], tgt_all[t0:t1]
        z = mm_f32(xc, w.T)  # (c, Vs) fp32 raw logits
        stats = combine_across_tp(row_stats(z, tgt, inv_temp, vocab_start), tp_group)
        lse, logp, ent, ez = finalize_stats(stats)
        ref_c = None if ref_logp is None else ref_logp[t0:t1]
        old_c = logp if old_logp is None else old_logp[t0:t1]  # None: on-policy, r = 1
        loss_tok, dlp, dent, parts = grpo_token_terms(logp, old_c, adv[t0:t1], ref_c, ent,
                                                      clip_low=clip_low, clip_high=clip_high, kl_coef=kl_coef,
                                                      entropy_coef=entropy_coef)
        wc = wt[t0:t1]
        loss += (wc * loss_tok).sum()
        sums += stats_sums(mask[t0:t1], parts, ent)
        logp_all[t0:t1], ent_all[t0:t1] = logp, ent
        if need_dx or need_dw:
            glp = (wc * dlp).contiguous()
            gent = (wc * dent).contiguous() if entropy_coef else None  # None: the row grad skips the term
            dz = row_grad_(z, tgt, lse, ez, glp, gent, inv_temp, vocab_start)  # (c, Vs) dL/dlogits
            dx_c = logits_grad_gemms(dz, xc, w, dw, need_dx)
            if need_dx:
                dx[t0:t1] = dx_c
        del z
    if need_dx:
        allreduce_dx(dx, tp_group)
    return loss, sums, logp_all, ent_all, dx, dw


class LinearGRPOFunction(torch.autograd.Function):
    """(hidden, weight) -> (loss, stat sums, logp, entropy); gradients computed in forward."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, old_logp, adv, ref_logp, wt, mask, cfg):
        need_dx = ctx.needs_input_grad[0]
        need_dw = ctx.needs_input_grad[1]
        loss, sums, logp, ent, dx, dw = linear_grpo_forward(hidden, weight, targets, old_logp, adv, ref_logp, wt,
                                                            mask, need_dx=need_dx, need_dw=need_dw, **cfg)
        ctx.save_for_backward(dx.to(hidden.dtype) if dx is not None else None,
                              dw.to(weight.dtype) if dw is not None else None)
        ctx.mark_non_differentiable(sums, logp, ent)
        return loss, sums, logp, ent

    @staticmethod
    def backward(ctx, g, *_):
        dx, dw = ctx.saved_tensors
        g = g.to(torch.float32)
        dx = None if dx is None else dx * g.to(dx.dtype)
        dw = None if dw is None else dw * g.to(dw.dtype)
        return dx, dw, None, None, None, None, None, None, None
