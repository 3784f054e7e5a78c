"""Shared plumbing: backend choice, input checks, fp32 GEMM helper, softmax statistics.

Softmax statistics of one token over (a tile of) the vocabulary, all fp32, z = logits / temperature:

    m  = max_j z_j                          running max
    s  = sum_j exp(z_j - m)                 sum-exp relative to m
    w  = sum_j exp(z_j - m) * (z_j - m)     first moment relative to m (for the entropy)
    tl = z_target if the target is in this tile else 0

Partial statistics of disjoint vocabulary tiles (vocab splits of one kernel, or TP ranks)
combine exactly (``combine_stats``); then lse = M + log S, logp = tl - lse,
E_p[z] = M + W / S and entropy = lse - E_p[z] = log S - W / S.
"""

from __future__ import annotations

import os

import torch

BACKENDS = ("auto", "triton", "torch_chunked", "eager")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
NEG_BIG = -1.0e30  # finite "minus infinity" for running maxima (avoids inf - inf = nan)

try:  # triton is optional: the torch paths work without it
    import triton  # noqa: F401

    HAS_TRITON = True
except Exception:  # pragma: no cover - depends on the environment
    HAS_TRITON = False


def interpreter_enabled() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``triton`` when CUDA is available (and triton imports), else ``torch_chunked``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "triton" if (HAS_TRITON and torch.cuda.is_available()) else "torch_chunked"
    if backend == "triton" and not HAS_TRITON:
        raise RuntimeError("backend='triton' needs the triton package; install it or use backend='torch_chunked'")
    return backend


def check_triton_device(*tensors: torch.Tensor) -> None:
    """Triton kernels need CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set before import."""
    for t in tensors:
        if t is None:
            continue
        if t.device.type == "cpu" and not interpreter_enabled():
            raise RuntimeError(
                "backend='triton' got CPU tensors but TRITON_INTERPRET is not set; "
                "use backend='torch_chunked' on CPU (the interpreter is only for tests)"
            )


def check_linear_inputs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> None:
    if hidden.dim() != 2:
        raise ValueError(f"hidden must be [T, H], got shape {tuple(hidden.shape)}")
    if weight.dim() != 2:
        raise ValueError(f"weight must be [V, H], got shape {tuple(weight.shape)}")
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden size of hidden ({hidden.shape[1]}) must equal that of weight ({weight.shape[1]})")
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets must be [T] with T={hidden.shape[0]}, got shape {tuple(targets.shape)}")
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be int64 or int32, got {targets.dtype}")
    for name, t in (("hidden", hidden), ("weight", weight)):
        if t.dtype not in SUPPORTED_DTYPES:
            raise ValueError(f"{name} dtype {t.dtype} is not supported; use one of {SUPPORTED_DTYPES}")
    if hidden.dtype != weight.dtype:
        raise ValueError(f"hidden ({hidden.dtype}) and weight ({weight.dtype}) must have the same dtype")
    if hidden.device != weight.device or targets.device != hidden.device:
        raise ValueError("hidden, weight and targets must be on the same device")


def check_targets_in_range(targets: torch.Tensor, vocab_size: int) -> None:
    """Global target ids must lie in [0, vocab_size) (one host sync)."""
    if targets.numel() == 0:
        return
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"target ids must be in [0, {vocab_size}), got min {lo} max {hi}")


def mm_f32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result. On CUDA half inputs use the fp32-output GEMM (tensor cores,
    fp32 accumulation and result); elsewhere upcast first."""
    if a.is_cuda and a.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):
            pass
    return torch.mm(a.float(), b.float())


def logits_grad_gemms(dz: torch.Tensor, xc: torch.Tensor, w: torch.Tensor, dw: torch.Tensor | None, need_dx: bool):
    """From dL/dlogits of a token chunk, dz (T_c, Vs) fp32: add dz^T X_c into ``dw`` (when given) and
    return dX_c = dz W (fp32; None unless ``need_dx``). Half inputs on CUDA: dz is cast to their
    dtype first, so both GEMMs run on tensor cores with fp32 outputs."""
    if dz.is_cuda and xc.dtype != torch.float32:
        dz = dz.to(xc.dtype)
    if dw is not None:
        dw += mm_f32(dz.T, xc)
    return mm_f32(dz, w) if need_dx else None


# ----------------------------------------------------------------------------- statistics


def tile_stats(z: torch.Tensor, tgt_local: torch.Tensor) -> torch.Tensor:
    """Statistics of a logits tile. z: (T, Vt) fp32 already divided by temperature;
    tgt_local: (T,) target index inside the tile (out of range when not in it). Returns (4, T)."""
    m = z.max(dim=1).values  # (T,)
    e = torch.sub(z, m[:, None]).exp_()  # (T, Vt): the one temporary
    s = e.sum(dim=1)
    w = torch.linalg.vecdot(e, z) - m * s  # sum_j e_j (z_j - m), without a (z - m) tile
    del e
    inside = (tgt_local >= 0) & (tgt_local < z.shape[1])
    tl = torch.where(inside, z.gather(1, tgt_local.clamp(0, z.shape[1] - 1)[:, None])[:, 0], torch.zeros_like(m))
    return torch.stack([m, s, w, tl])


def combine_stats(parts: torch.Tensor) -> torch.Tensor:
    """Combine partial statistics of disjoint vocabulary tiles. parts: (P, 4, T) -> (4, T)."""
    m, s, w, tl = parts.unbind(1)  # each (P, T)
    big_m = m.max(dim=0).values  # (T,)
    a = torch.exp(m - big_m)  # (P, T), 0 for empty tiles (m = NEG_BIG)
    s_tot = (a * s).sum(0)
    w_tot = (a * (w + (m - big_m) * s)).sum(0)
    return torch.stack([big_m, s_tot, w_tot, tl.sum(0)])


def finalize_stats(stats: torch.Tensor):
    """(4, T) combined statistics -> lse, logp (<= 0), entropy (>= 0), E_p[z]; all (T,) fp32."""
    big_m, s, w, tl = stats.unbind(0)
    log_s = torch.log(s)
    lse = big_m + log_s
    logp = (tl - lse).clamp_max(0.0)
    mean_shift = w / s  # E_p[z] - M
    entropy = (log_s - mean_shift).clamp_min(0.0)
    ez = big_m + mean_shift
    return lse, logp, entropy, ez


def softmax_grad_(z: torch.Tensor, tgt_local: torch.Tensor, lse, ez, g_logp, g_ent, scale: float = 1.0) -> torch.Tensor:
    """``scale`` x dL/dz for a logits tile z (T, Vt), written over z and returned, given global lse and
    E_p[z] (T,) and upstream gradients of logp and entropy (T,) (g_ent may be None):
        dlogp/dz_j = 1[j = target] - p_j,  dH/dz_j = -p_j (z_j - E_p[z]).
    Three passes over the tile and no (T, Vt) temporary without an entropy term; six and one with."""
    if g_ent is not None:  # -scale (g_lp + g_ent (z - E z)), before z is overwritten
        t = torch.sub(z, ez[:, None]).mul_((-scale) * g_ent[:, None]).add_((-scale) * g_logp[:, None])
    else:
        t = (-scale) * g_logp[:, None]
    z.sub_(lse[:, None]).exp_().mul_(t)  # -scale p (g_lp + ...)
    del t
    inside = (tgt_local >= 0) & (tgt_local < z.shape[1])
    rows = torch.nonzero(inside, as_tuple=True)[0]
    z[rows, tgt_local[rows]] += scale * g_logp[rows]
    return z
