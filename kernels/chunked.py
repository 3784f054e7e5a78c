"""Pure-torch chunked forms: tiles over T and V, fp32 math, never a [T, V] tensor.

Peak extra memory is O(chunk_t x chunk_v) plus the fp32 dW accumulator; backward recomputes
the logits tile by tile. This is the CPU training path and the structure the Triton kernels
follow (``linear_logprob.py``). The math is in ``_common`` (tile_stats / softmax_grad_).
"""

from __future__ import annotations

import torch

from ._common import combine_stats, mm_f32, softmax_grad_, tile_stats

CPU_BUDGET_BYTES = 32 << 20  # fp32 logits tile budget on CPU
GPU_BUDGET_BYTES = 1 << 30


def default_chunks(num_tokens: int, vocab_shard: int, device: torch.device, chunk_t=None, chunk_v=None):
    """Token and vocabulary chunk sizes for a logits tile of about the byte budget."""
    budget = GPU_BUDGET_BYTES if device.type == "cuda" else CPU_BUDGET_BYTES
    if chunk_v is None:
        chunk_v = min(vocab_shard, 16384)
    if chunk_t is None:
        chunk_t = max(16, budget // (4 * max(chunk_v, 1)))
    return max(1, min(int(chunk_t), max(num_tokens, 1))), max(1, int(chunk_v))


def default_chunk_tokens(num_tokens, vocab_shard, device, chunk_t=None):
    """Tokens per chunk when whole vocabulary rows (T_c x Vs fp32) are materialised: about the byte budget."""
    if chunk_t is None:
        budget = GPU_BUDGET_BYTES if device.type == "cuda" else CPU_BUDGET_BYTES
        chunk_t = max(16, budget // (4 * max(vocab_shard, 1)))
    return max(1, min(int(chunk_t), max(num_tokens, 1)))


def chunked_stats(x, w, targets, inv_temp: float, vocab_start: int, chunk_t: int, chunk_v: int) -> torch.Tensor:
    """Local softmax statistics (4, T) of hidden x (T, H) against this weight shard w (Vs, H)."""
    T, Vs = x.shape[0], w.shape[0]
    out = torch.empty(4, T, dtype=torch.float32, device=x.device)
    tgt = targets.long() - vocab_start  # (T,) index inside the shard, out of range if elsewhere
    for t0 in range(0, T, chunk_t):
        t1 = min(T, t0 + chunk_t)
        xc = x[t0:t1]
        parts = []
        for v0 in range(0, Vs, chunk_v):
            z = mm_f32(xc, w[v0:v0 + chunk_v].T).mul_(inv_temp)  # (c, cv)
            parts.append(tile_stats(z, tgt[t0:t1] - v0))
            del z
        out[:, t0:t1] = parts[0] if len(parts) == 1 else combine_stats(torch.stack(parts))
    return out


def chunked_grads(x, w, targets, lse, ez, g_logp, g_ent, inv_temp: float, vocab_start: int, chunk_t: int,
                  chunk_v: int, need_dx=True, need_dw=True):
    """dX (T, H) and dW (Vs, H) in fp32, recomputing logits tile by tile."""
    T, H = x.shape
    Vs = w.shape[0]
    dx = torch.zeros(T, H, dtype=torch.float32, device=x.device) if need_dx else None
    dw = torch.zeros(Vs, H, dtype=torch.float32, device=x.device) if need_dw else None
    tgt = targets.long() - vocab_start
    g_logp = g_logp.float()
    g_ent = None if g_ent is None else g_ent.float()
    for t0 in range(0, T, chunk_t):
        t1 = min(T, t0 + chunk_t)
        xc = x[t0:t1]
        ge = None if g_ent is None else g_ent[t0:t1]
        for v0 in range(0, Vs, chunk_v):
            v1 = min(Vs, v0 + chunk_v)
            z = mm_f32(xc, w[v0:v1].T).mul_(inv_temp)  # (c, cv)
            dz = softmax_grad_(z, tgt[t0:t1] - v0, lse[t0:t1], ez[t0:t1], g_logp[t0:t1], ge, scale=inv_temp)
            del z  # dz is z, overwritten; inv_temp: d z / d logits
            if need_dx:
                dx[t0:t1] += mm_f32(dz, w[v0:v1])
            if need_dw:
                dw[v0:v1] += mm_f32(dz.T, xc)
            del dz
    return dx, dw
