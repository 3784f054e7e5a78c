"""Standalone GRPO loss on precomputed per-token logprobs (tokens flattened to [T]).

Layers: Triton kernels (one launch forward, one backward) -> launchers -> ``GRPOLossFunction``
(autograd; "triton" or "torch" implementation of the same math) -> ``grpo_loss`` in ``api.py``.
Reference: ``reference.grpo_loss_eager``; math: ``grpo_math``.

Forward kernel: each program takes BLOCK tokens, computes the per-token loss and writes one
row of partial sums (weighted loss + masked stat numerators); the rows are summed in torch.
Backward kernel: recomputes dl/dlogp from the inputs (nothing [T]-sized saved besides them)
and writes dlogp = g * w * dl/dlogp, dentropy = -g * w * entropy_coef.
The aggregation weights w (T,) are prepared in torch (``grpo_math.token_weights``).
"""

from __future__ import annotations

import torch

from ._common import HAS_TRITON, check_triton_device
from .grpo_math import grpo_token_terms, stats_sums
from .reference import grpo_loss_eager  # noqa: F401  (the reference, importable beside the kernel)

NUM_SUMS = 9  # weighted loss, then the 8 ``stats_sums`` entries

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _grpo_terms(lp, old, adv, ref, clip_low, clip_high, kl_coef, HAS_REF: tl.constexpr):
        ratio = tl.exp(lp - old)
        clipped = tl.minimum(tl.maximum(ratio, 1.0 - clip_low), 1.0 + clip_high)
        pg1 = -adv * ratio
        pg2 = -adv * clipped
        use_clip = pg2 > pg1
        pg = tl.where(use_clip, pg2, pg1)
        dlp = tl.where(use_clip, 0.0, pg1)
        k3 = tl.zeros_like(lp)
        if HAS_REF:
            d = ref - lp
            e = tl.exp(d)
            k3 = e - d - 1.0
            dlp += kl_coef * (1.0 - e)
        return ratio, use_clip, pg, k3, dlp

    @triton.jit
    def _grpo_fwd_kernel(LP, OLD, ADV, REF, ENT, WT, MASK, PART, T, clip_low, clip_high, kl_coef, ent_coef,
                         HAS_REF: tl.constexpr, HAS_ENT: tl.constexpr, NSUM: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        ok = offs < T
        lp = tl.load(LP + offs, mask=ok, other=0.0).to(tl.float32)
        old = tl.load(OLD + offs, mask=ok, other=0.0).to(tl.float32)
        adv = tl.load(ADV + offs, mask=ok, other=0.0).to(tl.float32)
        wt = tl.load(WT + offs, mask=ok, other=0.0)
        mk = tl.load(MASK + offs, mask=ok, other=0.0)
        ref = lp
        if HAS_REF:
            ref = tl.load(REF + offs, mask=ok, other=0.0).to(tl.float32)
        ratio, use_clip, pg, k3, dlp = _grpo_terms(lp, old, adv, ref, clip_low, clip_high, kl_coef, HAS_REF)
        loss = pg + kl_coef * k3
        ent = tl.zeros_like(lp)
        if HAS_ENT:
            ent = tl.load(ENT + offs, mask=ok, other=0.0).to(tl.float32)
            loss -= ent_coef * ent
        cl = use_clip.to(tl.float32)
        lo = (use_clip & (ratio < 1.0 - clip_low)).to(tl.float32)
        hi = (use_clip & (ratio > 1.0 + clip_high)).to(tl.float32)
        row = PART + pid * NSUM
        tl.store(row + 0, tl.sum(wt * loss, 0))
        tl.store(row + 1, tl.sum(mk, 0))
        tl.store(row + 2, tl.sum(mk * pg, 0))
        tl.store(row + 3, tl.sum(mk * k3, 0))
        tl.store(row + 4, tl.sum(mk * ent, 0))
        tl.store(row + 5, tl.sum(mk * cl, 0))
        tl.store(row + 6, tl.sum(mk * lo, 0))
        tl.store(row + 7, tl.sum(mk * hi, 0))
        tl.store(row + 8, tl.sum(tl.where(ok, mk * ratio, 0.0), 0))

    @triton.jit
    def _grpo_bwd_kernel(G, LP, OLD, ADV, REF, WT, DLP, DENT, T, clip_low, clip_high, kl_coef, ent_coef,
                         HAS_REF: tl.constexpr, HAS_ENT: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        ok = offs < T
        g = tl.load(G).to(tl.float32)
        lp = tl.load(LP + offs, mask=ok, other=0.0).to(tl.float32)
        old = tl.load(OLD + offs, mask=ok, other=0.0).to(tl.float32)
        adv = tl.load(ADV + offs, mask=ok, other=0.0).to(tl.float32)
        wt = tl.load(WT + offs, mask=ok, other=0.0)
        ref = lp
        if HAS_REF:
            ref = tl.load(REF + offs, mask=ok, other=0.0).to(tl.float32)
        ratio, use_clip, pg, k3, dlp = _grpo_terms(lp, old, adv, ref, clip_low, clip_high, kl_coef, HAS_REF)
        tl.store(DLP + offs, g * wt * dlp, mask=ok)
        if HAS_ENT:
            tl.store(DENT + offs, -ent_coef * g * wt, mask=ok)


def block_config(device_type: str) -> dict:
    """Tokens per program and warps of both GRPO kernels (small blocks in the interpreter)."""
    return dict(BLOCK=1024, num_warps=4) if device_type == "cuda" else dict(BLOCK=64, num_warps=4)


def _check(logp, *others):
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use backend='torch_chunked'")
    check_triton_device(logp)
    if logp.dim() != 1:
        raise ValueError(f"logp must be flattened to [T], got shape {tuple(logp.shape)}")
    for name, t in others:
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"{name} shape {tuple(t.shape)} must equal logp shape {tuple(logp.shape)}")


def triton_grpo_forward(logp, old_logp, adv, ref, ent, wt, mask, clip_low, clip_high, kl_coef, ent_coef):
    """-> sums (NUM_SUMS,) fp32: [weighted loss, n, pg, k3, entropy, clip, clip_low, clip_high, ratio]."""
    T = logp.shape[0]
    cfg = block_config(logp.device.type)
    n_blocks = max(1, triton.cdiv(T, cfg["BLOCK"]))
    part = torch.zeros(n_blocks, NUM_SUMS, dtype=torch.float32, device=logp.device)
    if T > 0:
        _grpo_fwd_kernel[(n_blocks,)](logp, old_logp, adv, ref if ref is not None else logp,
                                      ent if ent is not None else logp, wt, mask, part, T, float(clip_low),
                                      float(clip_high), float(kl_coef), float(ent_coef), HAS_REF=ref is not None,
                                      HAS_ENT=ent is not None, NSUM=NUM_SUMS, **cfg)
    return part.sum(0)


def triton_grpo_backward(g, logp, old_logp, adv, ref, wt, has_ent, clip_low, clip_high, kl_coef, ent_coef):
    T = logp.shape[0]
    cfg = block_config(logp.device.type)
    dlp = torch.empty(T, dtype=torch.float32, device=logp.device)
    dent = torch.empty(T, dtype=torch.float32, device=logp.device) if has_ent else None
    if T > 0:
        _grpo_bwd_kernel[(triton.cdiv(T, cfg["BLOCK"]),)](g.float().reshape(1), logp, old_logp, adv,
                                                   ref if ref is not None else logp, wt, dlp,
                                                   dent if has_ent else dlp, T, float(clip_low), float(clip_high),
                                                   float(kl_coef), float(ent_coef), HAS_REF=ref is not None,
                                                   HAS_ENT=has_ent, **cfg)
    return dlp, dent


def torch_grpo_forward(logp, old_logp, adv, ref, ent, wt, mask, clip_low, clip_high, kl_coef, ent_coef):
    loss_tok, _, _, parts = grpo_token_terms(logp, old_logp, adv, ref, ent, clip_low=clip_low, clip_high=clip_high,
                                             kl_coef=kl_coef, entropy_coef=ent_coef)
    return torch.cat([(wt * loss_tok).sum().reshape(1), stats_sums(mask, parts, ent)])


def torch_grpo_backward(g, logp, old_logp, adv, ref, wt, has_ent, clip_low, clip_high, kl_coef, ent_coef):
    _, dlp, dent, _ = grpo_token_terms(logp, old_logp, adv, ref, None, clip_low=clip_low, clip_high=clip_high,
                                       kl_coef=kl_coef, entropy_coef=ent_coef)
    gw = g.float() * wt
    return gw * dlp, (gw * dent if has_ent else None)


class GRPOLossFunction(torch.autograd.Function):
    """(logp, entropy) -> loss scalar; also returns the stat sums (non-differentiable)."""

    @staticmethod
    def forward(ctx, logp, entropy, old_logp, adv, ref, wt, mask, clip_low, clip_high, kl_coef, ent_coef, impl):
        args = (clip_low, clip_high, kl_coef, ent_coef)
        if impl == "triton":
            _check(logp, ("old_logp", old_logp), ("advantages", adv), ("ref_logp", ref), ("entropy", entropy),
                   ("mask", mask))
            sums = triton_grpo_forward(logp, old_logp, adv, ref, entropy, wt, mask, *args)
        else:
            sums = torch_grpo_forward(logp, old_logp, adv, ref, entropy, wt, mask, *args)
        ctx.save_for_backward(logp, old_logp, adv, ref, wt)
        ctx.cfg = (args, impl, entropy is not None, logp.dtype, None if entropy is None else entropy.dtype)
        stat_sums = sums[1:].clone()
        ctx.mark_non_differentiable(stat_sums)
        return sums[0].clone(), stat_sums

    @staticmethod
    def backward(ctx, g, _g_stats):
        logp, old_logp, adv, ref, wt = ctx.saved_tensors
        args, impl, has_ent, lp_dtype, ent_dtype = ctx.cfg
        fn = triton_grpo_backward if impl == "triton" else torch_grpo_backward
        dlp, dent = fn(g, logp, old_logp, adv, ref, wt, has_ent, *args)
        dlp = dlp.to(lp_dtype)
        dent = dent.to(ent_dtype) if dent is not None else None
        return dlp, dent, None, None, None, None, None, None, None, None, None, None
