"""Row kernels over a materialised fp32 logits chunk Z [C, Vs] (C tokens, this rank's vocab shard).

Used by the GEMM schedules, where cuBLAS makes the logits chunk Z = X_c W^T and the dX / dW
GEMMs, and these kernels do the softmax work in one or two passes over Z:

    row stats   (4, C): online max m, sum-exp s, first moment w, target logit (see ``_common``)
    row grad    Z := dL/dlogits = inv_temp * (g_lp (1[y] - p) - g_ent p (z - E_p z)), in place

Layers: Triton kernels -> launchers (``row_config`` owns the block choice) -> the torch forms of
the same math (``torch_row_stats`` / ``torch_row_grad_``, the CPU path and the oracle's twin).
"""

from __future__ import annotations

import torch

from ._common import HAS_TRITON, NEG_BIG, check_triton_device, softmax_grad_, tile_stats

if HAS_TRITON:
    import triton
    import triton.language as tl

    _NEG = tl.constexpr(NEG_BIG)

    @triton.jit
    def _row_stats_kernel(Z, TGT, STATS, C, V, stride_z, inv_temp, vocab_start, BLOCK_V: tl.constexpr):
        """One program per row of the logits chunk: online max / sum-exp / moment / target logit."""
        row = tl.program_id(0).to(tl.int64)
        tgt = tl.load(TGT + row).to(tl.int64) - vocab_start
        m = tl.full([BLOCK_V], _NEG, tl.float32)  # per-lane running statistics, reduced at the end
        s = tl.zeros([BLOCK_V], tl.float32)
        w1 = tl.zeros([BLOCK_V], tl.float32)
        tlog = tl.zeros([BLOCK_V], tl.float32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            ok = cols < V
            z = tl.load(Z + row * stride_z + cols, mask=ok, other=0.0) * inv_temp
            m_new = tl.where(ok, tl.maximum(m, z), m)
            alpha = tl.exp(m - m_new)
            zc = tl.where(ok, z - m_new, 0.0)  # masked lanes: 0, so exp cannot overflow
            e = tl.where(ok, tl.exp(zc), 0.0)
            w1 = alpha * (w1 + (m - m_new) * s) + e * zc
            s = alpha * s + e
            tlog += tl.where((cols.to(tl.int64) == tgt) & ok, z, 0.0)
            m = m_new
        big_m = tl.max(m, 0)
        a = tl.exp(m - big_m)
        s_tot = tl.sum(a * s, 0)
        w_tot = tl.sum(a * (w1 + (m - big_m) * s), 0)
        tl.store(STATS + row, big_m)
        tl.store(STATS + C + row, s_tot)
        tl.store(STATS + 2 * C + row, w_tot)
        tl.store(STATS + 3 * C + row, tl.sum(tlog, 0))

    @triton.jit
    def _row_grad_kernel(Z, TGT, LSE, EZ, GLP, GENT, V, stride_z, inv_temp, vocab_start, BLOCK_V: tl.constexpr):
        """Z[row] := dL/dlogits = inv_temp * (g_lp (1[y] - p) - g_ent p (z - E_p z)), in place."""
        row = tl.program_id(0).to(tl.int64)
        tgt = tl.load(TGT + row).to(tl.int64) - vocab_start
        lse = tl.load(LSE + row)
        ez = tl.load(EZ + row)
        glp = tl.load(GLP + row)
        gent = tl.load(GENT + row)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            ok = cols < V
            ptr = Z + row * stride_z + cols
            z = tl.load(ptr, mask=ok, other=0.0) * inv_temp
            p = tl.exp(z - lse)
            dz = -p * (glp + gent * (z - ez)) + tl.where((cols.to(tl.int64) == tgt) & ok, glp, 0.0)
            tl.store(ptr, dz * inv_temp, mask=ok)


def row_config(device_type: str) -> dict:
    """Launch constants of both row kernels: a wide vocabulary block on GPU, small in the interpreter."""
    if device_type == "cuda":
        return dict(BLOCK_V=1024, num_warps=4)
    return dict(BLOCK_V=256, num_warps=4)


def _check_rows(z, tgt):
    if not HAS_TRITON:
        raise RuntimeError("triton is not installed; use backend='torch_chunked'")
    check_triton_device(z)
    if z.dtype != torch.float32 or z.dim() != 2 or z.stride(1) != 1:
        raise ValueError(f"the logits chunk must be a row-contiguous fp32 [C, V] tensor, got {z.dtype} "
                         f"shape {tuple(z.shape)} strides {z.stride()}")
    if tgt.shape != (z.shape[0],) or not tgt.is_contiguous():
        raise ValueError(f"targets must be contiguous [C] with C={z.shape[0]}, got shape {tuple(tgt.shape)}")


def triton_row_stats(z, tgt, inv_temp, vocab_start):
    """(4, C) fp32 statistics of the logits chunk z [C, V] (one program per row)."""
    _check_rows(z, tgt)
    C, V = z.shape
    stats = torch.empty(4, C, dtype=torch.float32, device=z.device)
    if C:
        _row_stats_kernel[(C,)](z, tgt, stats, C, V, z.stride(0), float(inv_temp), int(vocab_start),
                                **row_config(z.device.type))
    return stats


def triton_row_grad_(z, tgt, lse, ez, glp, gent, inv_temp, vocab_start):
    """Overwrite z [C, V] with dL/dlogits; lse, ez, glp, gent are fp32 (C,) (gent None: zeros)."""
    _check_rows(z, tgt)
    if gent is None:
        gent = torch.zeros_like(glp)
    C, V = z.shape
    if C:
        _row_grad_kernel[(C,)](z, tgt, lse, ez, glp, gent, V, z.stride(0), float(inv_temp), int(vocab_start),
                               **row_config(z.device.type))
    return z


def torch_row_stats(z, tgt, inv_temp, vocab_start):
    return tile_stats(z * inv_temp if inv_temp != 1.0 else z, tgt.long() - vocab_start)


def torch_row_grad_(z, tgt, lse, ez, glp, gent, inv_temp, vocab_start):
    """Overwrite z [C, V] with dL/dlogits (gent None: no entropy term)."""
    if inv_temp != 1.0:
        z.mul_(inv_temp)
    return softmax_grad_(z, tgt.long() - vocab_start, lse, ez, glp, gent, scale=inv_temp)
