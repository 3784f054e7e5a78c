"""Vocab-parallel kernels: 2 real processes (gloo, torch.multiprocessing spawn) equal TP=1.

Each rank holds an uneven vocabulary shard (V=1031 -> 515 + 516 rows) and the replicated
hidden states; logp / entropy / loss must equal the single-process run on every rank, dW the
matching rows of the full dW, and dX (all-reduced in backward) the full dX.
"""

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # inherited by the spawned children

import r1mega_kernels as K  # noqa: E402
from tests.numerics import EPS32, assert_within, rel_bound, scale  # noqa: E402
from r1mega_kernels._common import HAS_TRITON  # noqa: E402
from r1mega_kernels.linear_logprob import interpreted  # noqa: E402

TRITON_OK = HAS_TRITON and interpreted()  # gloo on CPU tensors: the interpreter
T, H, V, SPLIT = 37, 64, 1031, 515


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _problem(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g) / H ** 0.25
    w = torch.randn(V, H, generator=g) / H ** 0.25
    y = torch.randint(0, V, (T,), generator=g)
    old = -7.0 + torch.randn(T, generator=g) * 0.3
    adv = torch.randn(T, generator=g)
    mask = (torch.rand(T, generator=g) > 0.2).float()
    seq = torch.sort(torch.randint(0, 4, (T,), generator=g)).values
    return x, w, y, old, adv, mask, seq


def _run(x, w, y, old, adv, mask, seq, backend, tp_group=None, vocab_start=None, schedule="fused"):
    out = {}
    xd, wd = x.clone().requires_grad_(), w.clone().requires_grad_()
    lp, ent = K.linear_logprob(xd, wd, y, with_entropy=True, temperature=0.8, tp_group=tp_group,
                               vocab_start=vocab_start, backend=backend, schedule=schedule, chunk_size=16)
    (lp * torch.linspace(-1, 1, T) + 0.3 * ent).sum().backward()
    out.update(lp=lp.detach(), ent=ent.detach(), dx=xd.grad, dw=wd.grad)
    xd, wd = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss, stats = K.linear_grpo_loss(xd, wd, y, old_logp=lp.detach() + 0.2 * old.sin(), advantages=adv, mask=mask,
                                     ref_logp=lp.detach() + 0.1 * old.cos(), kl_coef=0.05, entropy_coef=0.01,
                                     temperature=0.8, agg="seq_mean_token_mean", seq_ids=seq, tp_group=tp_group,
                                     vocab_start=vocab_start, backend=backend, chunk_size=16)
    loss.backward()
    out.update(loss=loss.detach(), g_lp=stats["logp"], g_dx=xd.grad, g_dw=wd.grad)
    return out


def _worker(rank, world, init, seed, backend):
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # the caller's count, else 1 per process
        x, w, y, old, adv, mask, seq = _problem(seed)
        full = _run(x, w, y, old, adv, mask, seq, backend)
        lo, hi = (0, SPLIT) if rank == 0 else (SPLIT, V)
        # the Triton backend: both forward forms (fused kernel; cuBLAS chunks + row kernels) vs TP=1
        for schedule in ("fused", "gemm") if backend == "triton" else ("fused",):
            shard = _run(x, w[lo:hi].contiguous(), y, old, adv, mask, seq, backend, tp_group=dist.group.WORLD,
                         vocab_start=lo, schedule=schedule)
            # Two fp32 evaluations summing in other orders (tests/numerics.py): the vocabulary split moves the
            # log-sum-exp's and dX's sums over V = 1031 terms; chained: logits, log-sum-exp, the softmax-weighted
            # backward sums, the dX / dW products (D = 4): rel = V x 4 x eps = 4.9e-4 of the terms' scale. For
            # logprob / entropy that scale is the logits' cap max|x_t| max|w_v| / T (Cauchy-Schwarz), plus the
            # log-sum-exp's own V eps; for the gradients and the loss, the tensor's largest |value|.
            rel = rel_bound(V, 4)
            cap = float(x.norm(dim=1).max() * w.norm(dim=1).max()) / 0.8
            for k in ("lp", "ent", "dx", "loss", "g_lp", "g_dx", "dw", "g_dw"):
                ref = full[k][lo:hi] if k in ("dw", "g_dw") else full[k]
                allowed = rel * cap + EPS32 * V if k in ("lp", "ent", "g_lp") else rel * scale(ref)
                assert_within(shard[k], ref, allowed, f"rank {rank} {backend} {schedule} {k}")
    finally:
        dist.destroy_process_group()


@pytest.mark.multiproc
@pytest.mark.parametrize("backend", ["torch_chunked",
                                     pytest.param("triton", marks=pytest.mark.skipif(
                                         not TRITON_OK, reason="needs the Triton interpreter (TRITON_INTERPRET=1 "
                                                               "before r1mega_kernels import)"))])
def test_vocab_parallel_tp2_equals_tp1(backend):
    seed = int.from_bytes(os.urandom(4), "little") % (2 ** 31)
    if backend == "torch_chunked":
        init = f"tcp://127.0.0.1:{_free_port()}"
        mp.spawn(_worker, args=(2, init, seed, backend), nprocs=2, join=True)
    else:
        with tempfile.TemporaryDirectory() as d:
            mp.spawn(_worker, args=(2, f"file://{d}/rendezvous", seed, backend), nprocs=2, join=True)


def test_eager_refuses_tp_group():
    x, w, y = torch.randn(3, 16), torch.randn(7, 16), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="does not support tp_group"):
        K.linear_logprob(x, w, y, tp_group=object(), backend="eager")
