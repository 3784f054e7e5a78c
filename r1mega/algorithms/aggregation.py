"""Reduce a per-token loss (B, T) under a response mask to the scalar that is back-propagated.

The choice fixes how much gradient each token gets (weight w_bt with loss = sum_bt w_bt * l_bt):

    token_mean            w = m / sum(m)                         DAPO token-level loss (arXiv 2503.14476):
                                                                 every token counts equally.
    seq_mean_token_mean   w = m / (n_tokens(b) * n_seqs)         original GRPO (arXiv 2402.03300): tokens of
                                                                 long responses get less weight (length bias).
    seq_mean_token_sum    w = m / n_seqs                         sum over the tokens, mean over sequences.
    constant_norm         w = m / (n_seqs * max_response_len)    Dr. GRPO (arXiv 2503.20783): a constant
                                                                 normaliser, no length bias.

n_seqs counts the rows with at least one mask token (a fully masked row, e.g. an overlong-filtered
sample or padding, is not a sequence of the loss).

Global batches. The trainer splits the global batch into micro-batches and data-parallel ranks and
sums the micro-batch losses. Pass ``denominator=`` the *global* normaliser (the sum over all
micro-batches and ranks of :func:`normalizer` of each piece: total mask tokens for token_mean,
total sequences for the seq modes, total sequences * max_response_len for constant_norm); then the
sum of the micro-batch losses equals the full-batch loss exactly, and so do the gradients. (For
seq_mean_token_mean each sequence must lie entirely in one micro-batch. DDP *averages* gradients
over ranks, so multiply each rank's loss by the data-parallel size, or reduce with a sum.)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from r1mega.config.base import choose


def _num_seqs(n: Tensor, max_response_len: int | None = None) -> Tensor:
    return (n > 0).sum()


def _num_tokens(n: Tensor, max_response_len: int | None = None) -> Tensor:
    return n.sum()


def _num_seqs_times_max_len(n: Tensor, max_response_len: int | None) -> Tensor:
    if max_response_len is None or max_response_len < 1:
        raise ValueError(f"loss aggregation 'constant_norm' needs max_response_len >= 1, got {max_response_len!r}")
    return _num_seqs(n) * max_response_len


def _token_sum(loss: Tensor, mask: Tensor, n: Tensor) -> Tensor:
    return (loss * mask).sum()


def _sum_of_token_means(loss: Tensor, mask: Tensor, n: Tensor) -> Tensor:
    return ((loss * mask).sum(dim=-1) / n.clamp_min(1)).sum()   # (B,) -> ()


# name -> (numerator(loss, mask, n), normaliser(n, max_response_len)), n (B,) = mask tokens per sequence.
# The one definition: r1mega_kernels.grpo_math.token_weights (standalone) is pinned to it by
# tests/test_aggregation_copies.py, and r1mega.trainer.samples.denominator calls length_normalizer.
AGGREGATIONS: dict[str, tuple[Callable[[Tensor, Tensor, Tensor], Tensor], Callable[[Tensor, int | None], Tensor]]] = {
    "token_mean": (_token_sum, _num_tokens),
    "seq_mean_token_mean": (_sum_of_token_means, _num_seqs),
    "seq_mean_token_sum": (_token_sum, _num_seqs),
    "constant_norm": (_token_sum, _num_seqs_times_max_len),
}


def length_normalizer(name: str, lengths: Tensor, max_response_len: int | None = None) -> Tensor:
    """The local normaliser of ``aggregate(name, ...)`` from the number of mask tokens of each
    sequence, ``lengths`` (B,) (0 for a sequence outside the loss), as a 0-dim tensor."""
    return choose("loss aggregation", name, AGGREGATIONS)[1](lengths, max_response_len)


def normalizer(name: str, mask: Tensor, max_response_len: int | None = None) -> Tensor:
    """The local normaliser of ``aggregate(name, ...)`` for this (micro-)batch, as a 0-dim tensor.

    Sum it over micro-batches and ranks (e.g. all_reduce) and pass the total as ``denominator``.
    """
    return length_normalizer(name, mask.to(torch.float64).sum(dim=-1), max_response_len)


def aggregate(name: str, per_token_loss: Tensor, mask: Tensor, max_response_len: int | None = None,
              denominator: float | Tensor | None = None) -> Tensor:
    """Scalar loss from ``per_token_loss`` (B, T) and ``mask`` (B, T) (1 on response tokens).

    loss = numerator / max(normaliser, 1), with the numerator and normaliser of mode ``name`` (see
    the module docstring). ``denominator`` replaces the local normaliser (global-batch training).
    An empty mask gives 0 (with a zero gradient), never NaN.
    """
    if per_token_loss.shape != mask.shape:
        raise ValueError(f"per_token_loss {tuple(per_token_loss.shape)} and mask {tuple(mask.shape)} must match")
    numerator, normaliser = choose("loss aggregation", name, AGGREGATIONS)
    m = mask.to(per_token_loss.dtype)
    n = m.sum(dim=-1)                                                  # (B,)
    num = numerator(per_token_loss, m, n)
    if denominator is not None:
        norm = torch.as_tensor(denominator, dtype=per_token_loss.dtype, device=per_token_loss.device)
        return num / norm.clamp_min(1e-12)
    return num / normaliser(n, max_response_len).to(num.dtype).clamp_min(1)
