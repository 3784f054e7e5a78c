"""Fused linear logprob (+ entropy): forward and backward against a float64 eager reference.

On CPU the Triton kernels run in the interpreter (TRITON_INTERPRET=1, set below before
r1mega_kernels imports triton); shapes are tiny and odd. Inputs are fresh random each run
(the seed is in every failure message).
"""

import os
import time

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import r1mega_kernels as K  # noqa: E402
from r1mega_kernels._common import HAS_TRITON  # noqa: E402
from r1mega_kernels.chunked import chunked_stats  # noqa: E402
from r1mega_kernels.linear_logprob import gemm_linear_stats, interpreted, triton_linear_stats  # noqa: E402
from tests.numerics import EPS32, assert_within, linear_logprob_bounds, rel_bound  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_OK = HAS_TRITON and (DEV == "cuda" or interpreted())
needs_triton = pytest.mark.skipif(not TRITON_OK, reason="triton missing, or TRITON_INTERPRET was not set before "
                                                        "r1mega_kernels was imported (CPU)")
# "triton:<schedule>": the Triton backend with that schedule (see linear_logprob.SCHEDULES)
BACKENDS = ["eager", "torch_chunked"] + [pytest.param(f"triton:{s}", marks=needs_triton)
                                         for s in ("fused", "gemm", "fused_atomic")]


def _call(x, w, y, backend, **kw):
    name, _, schedule = backend.partition(":")
    return K.linear_logprob(x, w, y, backend=name, schedule=schedule or "fused", **kw)
# Tolerances (tests/numerics.py). Whatever the input dtype the kernels compute in fp32 (bf16 / fp16 inputs are
# exact in fp32 and in TF32 dots), so logprob and entropy follow linear_logprob_bounds. The gradients sum over
# the vocabulary (dX) or the tokens (dW) after the softmax: rel_bound(max(V, T), 3) of their largest |value|;
# in the input dtype the Triton backward rounds dlogits to it before its dots, and the result is returned in it:
# two roundings of that dtype, eps / 2 each (fp32: negligible; bf16: 7.8e-3; fp16: 9.8e-4).


def _grad_rel(dtype, v, t):
    return rel_bound(max(v, t), 3) + (torch.finfo(dtype).eps if dtype != torch.float32 else 0.0)


def _seed():
    s = time.time_ns() % (2 ** 31)
    torch.manual_seed(s)
    return s


def _inputs(T, H, V, dtype, scale=1.0):
    x = (torch.randn(T, H, dtype=torch.float64) * scale / H ** 0.25).to(dtype)
    w = (torch.randn(V, H, dtype=torch.float64) * scale / H ** 0.25).to(dtype)
    y = torch.randint(0, V, (T,))
    return x, w, y


def _reference(x, w, y, temperature, g_lp, g_ent):
    xr = x.double().requires_grad_()
    wr = w.double().requires_grad_()
    lp, ent = K.linear_logprob_eager(xr, wr, y, temperature=temperature, with_entropy=True)
    (lp * g_lp + ent * g_ent).sum().backward()
    return lp.detach(), ent.detach(), xr.grad, wr.grad


def _rel(a, b):
    return ((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_logprob_fwd_bwd_vs_fp64(backend, dtype):
    seed = _seed()
    T, H, V = 37, 64, 1031
    temperature = float(torch.empty(()).uniform_(0.6, 1.4))
    x, w, y = _inputs(T, H, V, dtype, scale=2.0)
    g_lp, g_ent = torch.randn(T, dtype=torch.float64), torch.randn(T, dtype=torch.float64)
    lp_ref, ent_ref, dx_ref, dw_ref = _reference(x, w, y, temperature, g_lp, g_ent)

    xd, wd = x.to(DEV).requires_grad_(), w.to(DEV).requires_grad_()
    lp, ent = _call(xd, wd, y.to(DEV), backend, temperature=temperature, with_entropy=True, chunk_size=(16, 300))
    (lp * g_lp.to(DEV, torch.float32) + ent * g_ent.to(DEV, torch.float32)).sum().backward()
    lp_tol, ent_tol = linear_logprob_bounds(x, w, temperature)
    g_tol = _grad_rel(dtype, V, T)
    msg = f"seed={seed} backend={backend} dtype={dtype}"
    assert lp.dtype == torch.float32 and ent.dtype == torch.float32, msg
    assert_within(lp.cpu(), lp_ref, lp_tol, f"{msg} logp")
    assert (lp <= 0).all(), f"{msg}: positive logp"
    assert_within(ent.cpu(), ent_ref, ent_tol, f"{msg} entropy")
    assert xd.grad.dtype == dtype and wd.grad.dtype == dtype, msg
    assert _rel(xd.grad, dx_ref) <= g_tol, f"{msg} dX rel err {_rel(xd.grad, dx_ref):.2e}"
    assert _rel(wd.grad, dw_ref) <= g_tol, f"{msg} dW rel err {_rel(wd.grad, dw_ref):.2e}"


NLL_BACKENDS = ["eager", "torch_chunked", pytest.param("triton", marks=needs_triton)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", NLL_BACKENDS)
def test_linear_nll_loss_value_and_grads_vs_fp64(backend, dtype):
    """SFT's loss -sum(mask logp) / denominator: value, logp and both gradients against float64; the
    fused backends make the gradients in forward (through the on-policy GRPO kernel)."""
    seed = _seed()
    T, H, V = 29, 48, 777
    temperature = float(torch.empty(()).uniform_(0.7, 1.3))
    x, w, y = _inputs(T, H, V, dtype, scale=2.0)
    mask = (torch.rand(T) > 0.3).float()
    mask[0] = 1.0
    den = float(mask.sum()) + 3.0  # a global count: more than this call's tokens
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    lp_ref, _ = K.linear_logprob_eager(xr, wr, y, temperature=temperature)
    loss_ref = -(lp_ref * mask.double()).sum() / den
    loss_ref.backward()

    xd, wd = x.to(DEV).requires_grad_(), w.to(DEV).requires_grad_()
    loss, lp = K.linear_nll_loss(xd, wd, y.to(DEV), mask=mask.to(DEV), denominator=den, temperature=temperature,
                                 backend=backend)
    (loss * 1.7).backward()  # backward scales the gradients made in forward
    msg = f"seed={seed} backend={backend} dtype={dtype}"
    lp_tol, _ = linear_logprob_bounds(x, w, temperature)
    assert_within(lp.cpu(), lp_ref.detach(), lp_tol, f"{msg} logp")
    assert abs(float(loss) - float(loss_ref)) <= lp_tol * float(mask.sum()) / den + 1e-6, msg
    g_tol = _grad_rel(dtype, V, T)
    dx, dw = xd.grad.double() / 1.7, wd.grad.double() / 1.7  # in float64: no rounding of the test's own
    assert _rel(dx, xr.grad) <= g_tol, f"{msg} dX rel err {_rel(dx, xr.grad):.2e}"
    assert _rel(dw, wr.grad) <= g_tol, f"{msg} dW rel err {_rel(dw, wr.grad):.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_logp_only_and_single_input_grads(backend):
    """with_entropy=False returns None; gradient of weight only (hidden frozen) still right."""
    seed = _seed()
    T, H, V = 19, 32, 523
    x, w, y = _inputs(T, H, V, torch.float32)
    g = torch.randn(T, dtype=torch.float64)
    _, _, _, dw_ref = _reference(x, w, y, 1.0, g, torch.zeros(T, dtype=torch.float64))
    wd = w.to(DEV).requires_grad_()
    lp, ent = _call(x.to(DEV), wd, y.to(DEV), backend)
    assert ent is None
    (lp * g.to(DEV, torch.float32)).sum().backward()
    tol = _grad_rel(torch.float32, V, T)
    assert _rel(wd.grad, dw_ref) <= tol, f"seed={seed} dW rel err {_rel(wd.grad, dw_ref):.2e} > {tol:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_logits_stay_finite_and_nonpositive(backend):
    seed = _seed()
    T, H, V = 23, 32, 301
    x, w, y = _inputs(T, H, V, torch.float32, scale=8.0)  # logits of order +-100
    y[:5] = (x[:5] @ w.T).argmax(1)  # some targets at the max logit: logp ~ 0
    lp, ent = _call(x.to(DEV), w.to(DEV), y.to(DEV), backend, with_entropy=True)
    lp_ref, ent_ref = K.linear_logprob_eager(x.double(), w.double(), y, with_entropy=True)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all(), f"seed={seed}"
    assert (lp <= 0).all() and (ent >= 0).all(), f"seed={seed}"
    assert_within(lp.cpu(), lp_ref, linear_logprob_bounds(x, w)[0], f"seed={seed} logp")  # logits ~100: ~4e-3


def test_chunked_vocab_tiles_combine_exactly():
    """Statistics over 7 vocabulary chunks equal those over one."""
    seed = _seed()
    x, w, y = _inputs(29, 48, 997, torch.float32)
    one = chunked_stats(x, w, y, 1.3, 0, 29, 997)
    many = chunked_stats(x, w, y, 1.3, 0, 8, 150)
    lse1 = one[0] + one[1].log()
    lse7 = many[0] + many[1].log()
    # other tiles: the logits' and the log-sum-exp's sums in other orders (linear_logprob_bounds; the target
    # logit, one dot product over H, within half of that)
    lp_tol = linear_logprob_bounds(x, w, 1.3)[0]
    assert_within(lse7, lse1, lp_tol, f"seed={seed} lse")
    assert_within(many[3], one[3], lp_tol, f"seed={seed} target logit")


@needs_triton
def test_triton_vocab_splits_match_single_split():
    seed = _seed()
    T, H, V = 21, 32, 701
    x, w, y = _inputs(T, H, V, torch.float32)
    x, w, y = x.to(DEV), w.to(DEV), y.to(DEV)
    a = triton_linear_stats(x, w, y, 1.0, 0, num_splits=1)
    b = triton_linear_stats(x, w, y, 1.0, 0, num_splits=4)
    c = gemm_linear_stats(x, w, y, 1.0, 0, chunk_t=8)  # cuBLAS chunks + the row-stats kernel
    lp_tol, ent_tol = linear_logprob_bounds(x, w)  # other splits / tiles: sums in other orders
    for other in (b, c):
        lp_a, lp_o = a[3] - a[0] - a[1].log(), other[3] - other[0] - other[1].log()
        assert_within(lp_o.cpu(), lp_a.cpu(), lp_tol, f"seed={seed} logp")
        ent_a, ent_o = a[1].log() - a[2] / a[1], other[1].log() - other[2] / other[1]
        assert_within(ent_o.cpu(), ent_a.cpu(), ent_tol, f"seed={seed} entropy")


def test_clear_errors():
    x, w, y = _inputs(5, 16, 33, torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        K.linear_logprob(x, w, y, backend="cuda")
    with pytest.raises(ValueError, match="hidden size"):
        K.linear_logprob(x, w[:, :8], y, backend="torch_chunked")
    with pytest.raises(ValueError, match="same dtype"):
        K.linear_logprob(x, w.half(), y, backend="torch_chunked")
    with pytest.raises(ValueError, match=r"target ids must be in \[0, 33\)"):
        K.linear_logprob(x, w, y + 40, backend="torch_chunked")
    with pytest.raises(ValueError, match="temperature"):
        K.linear_logprob(x, w, y, temperature=0.0, backend="torch_chunked")
    with pytest.raises(ValueError, match="targets must be"):
        K.linear_logprob(x, w, y.float(), backend="torch_chunked")
    with pytest.raises(ValueError, match="schedule must be one of"):
        K.linear_logprob(x, w, y, backend="torch_chunked", schedule="fastest")


def test_auto_backend_choice():
    expect = "triton" if (torch.cuda.is_available() and HAS_TRITON) else "torch_chunked"
    assert K.resolve_backend("auto") == expect


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gpu_realistic_shape(dtype):
    """Bigger shapes on the GPU: Triton vs the fp64 reference and vs torch_chunked."""
    seed = _seed()
    T, H, V = 1000, 1024, 32003
    x, w, y = _inputs(T, H, V, dtype)
    g = torch.randn(T, dtype=torch.float64)
    lp_ref, ent_ref, dx_ref, dw_ref = _reference(x, w, y, 1.0, g, torch.zeros(T, dtype=torch.float64))
    xd, wd = x.cuda().requires_grad_(), w.cuda().requires_grad_()
    lp, ent = K.linear_logprob(xd, wd, y.cuda(), with_entropy=True, backend="triton")
    (lp * g.cuda().float()).sum().backward()
    for schedule in ("gemm", "fused_atomic"):  # the other schedules agree with the default
        xo, wo = x.cuda().requires_grad_(), w.cuda().requires_grad_()
        lpo, ento = K.linear_logprob(xo, wo, y.cuda(), with_entropy=True, backend="triton", schedule=schedule)
        (lpo * g.cuda().float()).sum().backward()
        assert (lpo - lp).abs().max() <= 1e-3 and (ento - ent).abs().max() <= 1e-3, schedule
        assert _rel(xo.grad, xd.grad.double().cpu()) <= 2e-2 and _rel(wo.grad, wd.grad.double().cpu()) <= 2e-2
    err = (lp.double().cpu() - lp_ref).abs()
    assert err.mean() <= 1e-4 and err.max() <= 1e-2, f"seed={seed} mean {err.mean():.2e}"
    assert (lp <= 0).all()
    assert ((ent.double().cpu() - ent_ref).abs() / ent_ref).max() <= 1e-3
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    assert _rel(xd.grad, dx_ref) <= tol and _rel(wd.grad, dw_ref) <= tol, f"seed={seed}"


@pytest.mark.parametrize("T,V,H", [(16384, 151936, 4096), (4096, 129280, 7168), (65536, 32768, 8192), (300, 256, 64)])
def test_forward_splits_fill_the_gpu_and_keep_x_in_l2(T, V, H):
    """The fused forward's vocabulary splits on an H200-like GPU (132 SMs, 60 MiB L2), bf16."""
    from r1mega_kernels.linear_logprob import forward_splits, tile_config

    cfg = tile_config("cuda", torch.bfloat16, arch=90)
    sms, l2 = 132, 60 << 20
    n_t, n_v = -(-T // cfg["BLOCK_T"]), -(-V // cfg["BLOCK_V"])
    s = forward_splits(n_t, n_v, cfg["BLOCK_T"], H, 2, sms, l2)
    assert 1 <= s <= n_v
    if s < n_v:  # capped by the vocabulary tiles otherwise
        assert s * n_t >= 2 * sms  # programs fill every SM twice
        resident_x_blocks = -(-sms // s)  # splits vary fastest: distinct token blocks among resident programs
        assert resident_x_blocks * cfg["BLOCK_T"] * H * 2 <= l2 // 2 + cfg["BLOCK_T"] * H * 2
