"""Fused linear log-probability (+ entropy): logp[t] = log_softmax(x W^T / temp)[t, y_t].

Layers: Triton kernels -> launchers (grid / block choices, shape and dtype checks)
-> ``LinearLogprobFunction`` (autograd; triton or torch_chunked implementation)
-> ``linear_logprob`` in ``api.py``. References: ``reference.linear_logprob_eager`` (eager,
full logits) and ``chunked.chunked_stats`` / ``chunked.chunked_grads`` (same math, torch).

Forward kernel: grid (vocab splits, T blocks). Each program streams its vocabulary tiles,
computes the logits tile with tl.dot over H blocks (fp32 accumulation) and keeps an online
max / sum-exp / first moment / target logit per token; the few splits are combined in torch
(the same exact combine as across TP ranks). Nothing of size [T, V] is written. 2THV FLOP.

Backward, two forms (``SCHEDULES``):
- "gemm" (default): per token chunk, cuBLAS recomputes Z_c = X_c W^T, the row kernel of
  ``logits_rows`` turns it into dL/dZ_c in place, cuBLAS makes dX_c and adds dW. Deterministic,
  6THV FLOP in tensor-core GEMMs; extra memory is one fp32 [T_c, Vs] chunk (~1 GiB budget).
- "atomic": grid (T blocks, V tiles); each program recomputes its logits tile, forms
  dL/dz = g_logp (1[y] - p) - g_ent p (z - E_p z) and atomically adds dz W into dX and dz^T X
  into dW (fp32). No chunk buffer, but T/BLOCK_T atomic passes over dW.
The "gemm" schedule also has a forward form (cuBLAS chunks + the row-stats kernel), for the
benchmark to weigh against the fused forward kernel.
"""

from __future__ import annotations

import torch

from ._common import (HAS_TRITON, NEG_BIG, check_triton_device, combine_stats, finalize_stats, logits_grad_gemms,
                      mm_f32)
from .chunked import chunked_grads, chunked_stats, default_chunk_tokens, default_chunks
from .logits_rows import triton_row_grad_, triton_row_stats
from .reference import linear_logprob_eager  # noqa: F401  (the reference, importable beside the kernel)
from .vocab_parallel import allreduce_dx, combine_across_tp

if HAS_TRITON:
    import triton
    import triton.language as tl

    _NEG = tl.constexpr(NEG_BIG)

    @triton.jit
    def _llp_fwd_kernel(X, W, TGT, STATS, T, V, H, stride_x, stride_w, inv_temp, vocab_start, tiles_per_split,
                        BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                        UPCAST: tl.constexpr, PREC: tl.constexpr):
        pid_s = tl.program_id(0)  # vocabulary split: fastest, so resident programs share X blocks in L2
        pid_t = tl.program_id(1)
        rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        row_ok = rows < T
        tgt = tl.load(TGT + rows, mask=row_ok, other=0).to(tl.int64) - vocab_start
        x_rows = X + rows.to(tl.int64)[:, None] * stride_x  # 64-bit offsets: T * H may pass 2**31
        offs_h = tl.arange(0, BLOCK_H)
        m = tl.full([BLOCK_T], _NEG, tl.float32)
        s = tl.zeros([BLOCK_T], tl.float32)
        w1 = tl.zeros([BLOCK_T], tl.float32)
        tlog = tl.zeros([BLOCK_T], tl.float32)
        for i in range(0, tiles_per_split):
            cols = (pid_s * tiles_per_split + i) * BLOCK_V + tl.arange(0, BLOCK_V)
            col_ok = cols < V
            w_rows = W + cols.to(tl.int64)[:, None] * stride_w
            acc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
            for h0 in range(0, H, BLOCK_H):
                hh = h0 + offs_h
                h_ok = hh < H
                xt = tl.load(x_rows + hh[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
                wt = tl.load(w_rows + hh[None, :], mask=col_ok[:, None] & h_ok[None, :], other=0.0)
                if UPCAST:
                    xt = xt.to(tl.float32)
                    wt = wt.to(tl.float32)
                acc = tl.dot(xt, tl.trans(wt), acc, input_precision=PREC)
            z = tl.where(col_ok[None, :], acc * inv_temp, 3.0 * _NEG)  # (BT, BV)
            m_new = tl.maximum(m, tl.max(z, 1))
            alpha = tl.exp(m - m_new)
            zc = z - m_new[:, None]
            p = tl.where(col_ok[None, :], tl.exp(zc), 0.0)
            w1 = alpha * (w1 + (m - m_new) * s) + tl.sum(p * tl.where(col_ok[None, :], zc, 0.0), 1)
            s = alpha * s + tl.sum(p, 1)
            hit = (cols[None, :].to(tl.int64) == tgt[:, None]) & col_ok[None, :]
            tlog += tl.sum(tl.where(hit, z, 0.0), 1)
            m = m_new
        base = STATS + pid_s * 4 * T + rows
        tl.store(base, m, mask=row_ok)
        tl.store(base + T, s, mask=row_ok)
        tl.store(base + 2 * T, w1, mask=row_ok)
        tl.store(base + 3 * T, tlog, mask=row_ok)

    @triton.jit
    def _llp_bwd_kernel(X, W, TGT, LSE, EZ, GLP, GENT, DX, DW, T, V, H, stride_x, stride_w, inv_temp, vocab_start,
                        BLOCK_T: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                        UPCAST: tl.constexpr, HAS_ENT: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
                        PREC: tl.constexpr):
        pid_t = tl.program_id(0)
        pid_v = tl.program_id(1)
        rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        row_ok = rows < T
        col_ok = cols < V
        rows64 = rows.to(tl.int64)  # 64-bit offsets: T * H and V * H may pass 2**31
        cols64 = cols.to(tl.int64)
        x_rows = X + rows64[:, None] * stride_x
        w_rows = W + cols64[:, None] * stride_w
        offs_h = tl.arange(0, BLOCK_H)
        acc = tl.zeros([BLOCK_T, BLOCK_V], tl.float32)
        for h0 in range(0, H, BLOCK_H):
            hh = h0 + offs_h
            h_ok = hh < H
            xt = tl.load(x_rows + hh[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
            wt = tl.load(w_rows + hh[None, :], mask=col_ok[:, None] & h_ok[None, :], other=0.0)
            if UPCAST:
                xt = xt.to(tl.float32)
                wt = wt.to(tl.float32)
            acc = tl.dot(xt, tl.trans(wt), acc, input_precision=PREC)
        z = acc * inv_temp
        ok = row_ok[:, None] & col_ok[None, :]
        lse = tl.load(LSE + rows, mask=row_ok, other=0.0)
        glp = tl.load(GLP + rows, mask=row_ok, other=0.0)
        tgt = tl.load(TGT + rows, mask=row_ok, other=0).to(tl.int64) - vocab_start
        p = tl.where(ok, tl.exp(z - lse[:, None]), 0.0)
        if HAS_ENT:
            ez = tl.load(EZ + rows, mask=row_ok, other=0.0)
            gent = tl.load(GENT + rows, mask=row_ok, other=0.0)
            dz = -p * (glp[:, None] + gent[:, None] * (z - ez[:, None]))
        else:
            dz = -p * glp[:, None]
        dz += tl.where((cols[None, :].to(tl.int64) == tgt[:, None]) & ok, glp[:, None], 0.0)
        dz = dz * inv_temp
        if UPCAST:
            dzc = dz
        else:
            dzc = dz.to(X.dtype.element_ty)
        for h0 in range(0, H, BLOCK_H):
            hh = h0 + offs_h
            h_ok = hh < H
            if NEED_DX:
                wt = tl.load(w_rows + hh[None, :], mask=col_ok[:, None] & h_ok[None, :], other=0.0)
                if UPCAST:
                    wt = wt.to(tl.float32)
                dx = tl.dot(dzc, wt, input_precision=PREC)  # (BT, BH)
                tl.atomic_add(DX + rows64[:, None] * H + hh[None, :], dx, mask=row_ok[:, None] & h_ok[None, :])
            if NEED_DW:
                xt = tl.load(x_rows + hh[None, :], mask=row_ok[:, None] & h_ok[None, :], other=0.0)
                if UPCAST:
                    xt = xt.to(tl.float32)
                dw = tl.dot(tl.trans(dzc), xt, input_precision=PREC)  # (BV, BH)
                tl.atomic_add(DW + cols64[:, None] * H + hh[None, :], dw, mask=col_ok[:, None] & h_ok[None, :])


# ----------------------------------------------------------------------------- launchers

SCHEDULES = {
    # name: (forward, backward)
    "fused": ("fused", "gemm"),  # default: fused forward kernel, deterministic cuBLAS backward
    "gemm": ("gemm", "gemm"),  # cuBLAS logits chunks + row kernels both ways
    "fused_atomic": ("fused", "atomic"),  # fully fused; fp32 atomics into dX / dW
}


def check_schedule(schedule: str) -> tuple[str, str]:
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    return SCHEDULES[schedule]


def tile_config(device_type: str, dtype: torch.dtype, backward: bool = False, arch: int = 90) -> dict:
    """Launch constants of the fused forward / backward (atomic) kernels; ``arch`` = compute capability x10.

    GPU: token x vocab tiles over 64-wide hidden blocks, 8 warps, 3 pipeline stages of X / W
    tiles; the dots run on tensor cores (wgmma on Hopper). The Hopper half-precision forward
    takes 128 x 128 tiles (64 FLOP per byte of X / W tile traffic, against 43 for 64 x 128);
    elsewhere 64 x 128. ``aot_report`` checks every choice below for sm_90 and sm_80 (no register
    spills, shared memory within the per-block limit); for sm_90 bf16: forward 96 KiB and 202
    registers, backward 136 KiB and 149. fp32 inputs use exact fp32 dots ("ieee") so the fp32
    path matches the reference; those hold more registers, hence 32-wide hidden blocks (and
    64-wide vocabulary tiles) where 64 would spill.
    Interpreter: small tiles, and the dot is done in fp32 (bf16 dots are wrong there).
    """
    prec = "ieee" if dtype == torch.float32 else "tf32"
    if device_type != "cuda":
        return dict(BLOCK_T=16, BLOCK_V=128, BLOCK_H=32, num_warps=4, num_stages=1, UPCAST=True, PREC=prec)
    bt, bv, bh = 64, 128, 64
    if dtype == torch.float32 and (backward or arch < 90):
        bv, bh = 64, 32
    elif backward and arch < 90:
        bh = 32
    elif not backward and dtype != torch.float32 and arch >= 90:
        bt = 128
    return dict(BLOCK_T=bt, BLOCK_V=bv, BLOCK_H=bh, num_warps=8, num_stages=3, UPCAST=False, PREC=prec)


def _arch(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def _check_triton(x, w):
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use backend='torch_chunked'")
    check_triton_device(x, w)
    if x.stride(1) != 1 or w.stride(1) != 1:
        raise ValueError("hidden and weight must be contiguous in the hidden dimension (stride 1)")
    if x.shape[1] < 16:
        raise ValueError(f"hidden size {x.shape[1]} is below the minimum of 16 for the Triton kernels")


def forward_splits(n_t: int, n_v: int, block_t: int, hidden: int, elt_bytes: int, sms: int, l2_bytes: int) -> int:
    """Vocabulary splits of the fused forward: enough programs to fill the GPU twice, and enough
    splits that the X blocks of the programs running at once stay in L2.

    Splits vary fastest in the grid, so the ~``sms`` programs resident at a time cover about
    sms / splits distinct token blocks, each re-reading its [BLOCK_T, H] block of X for every
    vocabulary tile: those blocks must fit in (half of) L2, or X streams from HBM once per tile.
    """
    fill = -(-2 * sms // max(n_t, 1))
    l2_fit = -(-sms * block_t * hidden * elt_bytes // max(l2_bytes // 2, 1))
    return max(1, min(n_v, max(fill, l2_fit)))


def triton_linear_stats(x, w, targets, inv_temp: float, vocab_start: int, num_splits=None) -> torch.Tensor:
    """Local softmax statistics (4, T) over the weight shard with the fused forward kernel."""
    _check_triton(x, w)
    T, H = x.shape
    Vs = w.shape[0]
    cfg = tile_config(x.device.type, x.dtype, arch=_arch(x.device))
    n_t, n_v = triton.cdiv(T, cfg["BLOCK_T"]), triton.cdiv(Vs, cfg["BLOCK_V"])
    if num_splits is None:
        if x.device.type == "cuda":
            props = torch.cuda.get_device_properties(x.device)
            num_splits = forward_splits(n_t, n_v, cfg["BLOCK_T"], H, x.element_size(), props.multi_processor_count,
                                        getattr(props, "L2_cache_size", 50 << 20))
        else:
            num_splits = 1
    if T == 0:
        return torch.zeros(4, 0, dtype=torch.float32, device=x.device)
    tiles_per_split = triton.cdiv(n_v, num_splits)
    num_splits = triton.cdiv(n_v, tiles_per_split)
    parts = torch.empty(num_splits, 4, T, dtype=torch.float32, device=x.device)
    _llp_fwd_kernel[(num_splits, n_t)](x, w, targets.contiguous(), parts, T, Vs, H, x.stride(0), w.stride(0),
                                       float(inv_temp), int(vocab_start), tiles_per_split, **cfg)
    return parts[0] if num_splits == 1 else combine_stats(parts)


def triton_linear_grads(x, w, targets, lse, ez, g_logp, g_ent, inv_temp: float, vocab_start: int,
                        need_dx=True, need_dw=True):
    """dX (T, H), dW (Vs, H) in fp32 with the fused backward kernel (logits recomputed per tile,
    fp32 atomics: the summation order is not deterministic)."""
    _check_triton(x, w)
    T, H = x.shape
    Vs = w.shape[0]
    cfg = tile_config(x.device.type, x.dtype, backward=True, arch=_arch(x.device))
    dx = torch.zeros(T, H, dtype=torch.float32, device=x.device) if need_dx else None
    dw = torch.zeros(Vs, H, dtype=torch.float32, device=x.device) if need_dw else None
    has_ent = g_ent is not None
    glp = g_logp.float().contiguous()
    gent = g_ent.float().contiguous() if has_ent else glp
    if T == 0:
        return dx, dw
    grid = (triton.cdiv(T, cfg["BLOCK_T"]), triton.cdiv(Vs, cfg["BLOCK_V"]))
    _llp_bwd_kernel[grid](x, w, targets.contiguous(), lse, ez, glp, gent, dx if need_dx else glp,
                          dw if need_dw else glp, T, Vs, H, x.stride(0), w.stride(0), float(inv_temp),
                          int(vocab_start), HAS_ENT=has_ent, NEED_DX=need_dx, NEED_DW=need_dw, **cfg)
    return dx, dw


def gemm_linear_stats(x, w, targets, inv_temp: float, vocab_start: int, chunk_t=None) -> torch.Tensor:
    """Local statistics (4, T): per token chunk, cuBLAS logits Z_c = X_c W^T (fp32, [T_c, Vs]),
    then the Triton row-stats kernel. Extra memory: one fp32 chunk of about the byte budget."""
    _check_triton(x, w)
    T, Vs = x.shape[0], w.shape[0]
    chunk_t = default_chunk_tokens(T, Vs, x.device, chunk_t)
    out = torch.empty(4, T, dtype=torch.float32, device=x.device)
    tgt = targets.contiguous()
    for t0 in range(0, T, chunk_t):
        t1 = min(T, t0 + chunk_t)
        z = mm_f32(x[t0:t1], w.T)  # (T_c, Vs)
        out[:, t0:t1] = triton_row_stats(z, tgt[t0:t1], inv_temp, vocab_start)
        del z
    return out


def gemm_linear_grads(x, w, targets, lse, ez, g_logp, g_ent, inv_temp: float, vocab_start: int,
                      need_dx=True, need_dw=True, chunk_t=None):
    """dX, dW (fp32) per token chunk: recompute Z_c with cuBLAS, Z_c := dL/dZ_c in place (row kernel),
    dX_c = dZ_c W and dW += dZ_c^T X_c with cuBLAS (half inputs, fp32 outputs). Deterministic;
    6 T H V FLOP, all in GEMMs."""
    _check_triton(x, w)
    T, H = x.shape
    Vs = w.shape[0]
    chunk_t = default_chunk_tokens(T, Vs, x.device, chunk_t)
    dx = torch.empty(T, H, dtype=torch.float32, device=x.device) if need_dx else None
    dw = torch.zeros(Vs, H, dtype=torch.float32, device=x.device) if need_dw else None
    glp = g_logp.float().contiguous()
    gent = g_ent.float().contiguous() if g_ent is not None else torch.zeros_like(glp)
    tgt = targets.contiguous()
    for t0 in range(0, T, chunk_t):
        t1 = min(T, t0 + chunk_t)
        xc = x[t0:t1]
        dz = triton_row_grad_(mm_f32(xc, w.T), tgt[t0:t1], lse[t0:t1], ez[t0:t1], glp[t0:t1], gent[t0:t1],
                              inv_temp, vocab_start)  # (T_c, Vs) dL/dlogits
        dx_c = logits_grad_gemms(dz, xc, w, dw, need_dx)
        if need_dx:
            dx[t0:t1] = dx_c
        del dz, dx_c
    return dx, dw


# ----------------------------------------------------------------------------- autograd


class LinearLogprobFunction(torch.autograd.Function):
    """(hidden, weight) -> (logp, entropy); impl is "triton" or "torch_chunked".

    ``schedule`` (triton only, see ``SCHEDULES``) picks the fused or GEMM forms of each pass.
    With a TP group the forward all-gathers the (4, T) statistics and the backward all-reduces
    dX (see ``vocab_parallel``)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature, with_entropy, tp_group, vocab_start, impl, chunks,
                schedule):
        inv_temp = 1.0 / float(temperature)
        chunk_t, chunk_v = chunks or (None, None)
        if impl == "triton":
            fwd, _ = check_schedule(schedule)
            if fwd == "fused":
                local = triton_linear_stats(hidden, weight, targets, inv_temp, vocab_start)
            else:
                local = gemm_linear_stats(hidden, weight, targets, inv_temp, vocab_start, chunk_t)
        else:
            chunk_t, chunk_v = default_chunks(hidden.shape[0], weight.shape[0], hidden.device, chunk_t, chunk_v)
            local = chunked_stats(hidden, weight, targets, inv_temp, vocab_start, chunk_t, chunk_v)
        lse, logp, entropy, ez = finalize_stats(combine_across_tp(local, tp_group))
        ctx.save_for_backward(hidden, weight, targets, lse, ez)
        ctx.cfg = (inv_temp, tp_group, vocab_start, impl, chunk_t, chunk_v, schedule)
        ctx.set_materialize_grads(False)
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        hidden, weight, targets, lse, ez = ctx.saved_tensors
        inv_temp, tp_group, vocab_start, impl, chunk_t, chunk_v, schedule = ctx.cfg
        need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if g_logp is None:
            g_logp = torch.zeros_like(lse)
        args = (hidden, weight, targets, lse, ez, g_logp, g_ent, inv_temp, vocab_start, need_dx, need_dw)
        if impl == "triton":
            _, bwd = check_schedule(schedule)
            dx, dw = triton_linear_grads(*args) if bwd == "atomic" else gemm_linear_grads(*args, chunk_t=chunk_t)
        else:
            dx, dw = chunked_grads(*args[:9], chunk_t, chunk_v, need_dx, need_dw)
        if dx is not None:
            dx = allreduce_dx(dx, tp_group).to(hidden.dtype)
        if dw is not None:
            dw = dw.to(weight.dtype)
        return dx, dw, None, None, None, None, None, None, None, None


def interpreted() -> bool:
    """True when this module's kernels were built for the Triton CPU interpreter."""
    if not HAS_TRITON:
        return False
    return type(_llp_fwd_kernel).__name__ == "InterpretedFunction"
