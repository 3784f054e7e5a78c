"""Loss aggregation has one definition, ``r1mega.algorithms.aggregation``. The copies that remain
give its numbers, in float64, on random inputs (odd shapes, random masks with empty rows and
sequences, every mode):

* ``r1mega_kernels.grpo_math.token_weights``: the kernels' weights on packed tokens (the kernel
  package stands alone, so it keeps its own copy);
* ``r1mega.trainer.samples.denominator``: the trainer's global normaliser from the samples (it
  calls ``length_normalizer`` on the samples' loss masks, the masks ``trainer/batch.py`` packs).
"""

import pytest
import torch

from r1mega.algorithms import AGGREGATIONS, aggregate, normalizer
from r1mega.algorithms.config import LOSS_AGG_NAMES
from r1mega.trainer.samples import denominator
from r1mega.types import Sample

f64 = torch.float64
MODES = sorted(AGGREGATIONS)
L = 13  # max_response_len (constant_norm)


def _kernel_weights():
    from r1mega_kernels.grpo_math import AGGREGATIONS as KERNEL_MODES, token_weights
    return KERNEL_MODES, token_weights


def _batch(seed: int, B: int, T: int):
    """Padded rows (B, T): per-token loss, a random mask inside each sequence's tokens, and the
    packed form (tokens of all sequences back to back, with their sequence index)."""
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(B, T, generator=g, dtype=f64) * 3
    tokens = torch.randint(1, T + 1, (B,), generator=g)              # each sequence's length (>= 1)
    valid = torch.arange(T)[None] < tokens[:, None]                  # (B, T)
    mask = (torch.rand(B, T, generator=g) < 0.7) & valid
    empty = torch.randperm(B, generator=g)[: max(1, B // 3)]
    mask[empty] = False                                              # sequences outside the loss
    packed = valid.flatten()
    seq_ids = torch.arange(B).repeat_interleave(T)[packed]
    return loss, mask.to(f64), loss.flatten()[packed], mask.to(f64).flatten()[packed], seq_ids


def _kernel_loss(mode, loss_p, mask_p, seq_ids, denominator=None):
    _, token_weights = _kernel_weights()
    w = token_weights(mask_p, mode, seq_ids=seq_ids, denominator=denominator, max_response_len=L, dtype=f64)
    return (w * loss_p).sum()


def _close(a, b, what):
    torch.testing.assert_close(torch.as_tensor(a, dtype=f64), torch.as_tensor(b, dtype=f64), rtol=1e-12, atol=1e-12,
                               msg=what)


def test_every_copy_knows_the_same_modes():
    kernel_modes, _ = _kernel_weights()
    assert set(kernel_modes) == set(AGGREGATIONS) == set(LOSS_AGG_NAMES)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed, B, T", [(0, 7, 37), (1, 1, 5), (2, 13, 11), (3, 3, 1), (4, 29, 53)])
def test_kernel_weights_equal_the_definition(mode, seed, B, T):
    loss, mask, loss_p, mask_p, seq_ids = _batch(seed, B, T)
    _close(_kernel_loss(mode, loss_p, mask_p, seq_ids), aggregate(mode, loss, mask, max_response_len=L),
           f"{mode}, local normaliser")
    # global-batch training: the micro-batches' normalisers summed, passed as ``denominator``
    cut = B // 2
    den = normalizer(mode, mask[:cut], L) + normalizer(mode, mask[cut:], L)
    _close(den, normalizer(mode, mask, L), f"{mode}: normalisers add up")
    ours = sum(aggregate(mode, loss[s], mask[s], L, denominator=den) for s in (slice(0, cut), slice(cut, B)))
    first = seq_ids < cut
    theirs = (_kernel_loss(mode, loss_p[first], mask_p[first], seq_ids[first], den)
              + _kernel_loss(mode, loss_p[~first], mask_p[~first], seq_ids[~first], den))
    _close(theirs, ours, f"{mode}, global denominator")
    _close(ours, aggregate(mode, loss, mask, L), f"{mode}: micro-batches sum to the full batch")


@pytest.mark.parametrize("mode", MODES)
def test_empty_mask_gives_zero_everywhere(mode):
    loss, mask, loss_p, mask_p, seq_ids = _batch(5, 4, 9)
    zero = torch.zeros((), dtype=f64)
    _close(aggregate(mode, loss, torch.zeros_like(mask), L), zero, mode)
    _close(_kernel_loss(mode, loss_p, torch.zeros_like(mask_p), seq_ids), zero, mode)
    assert denominator([], mode, L) == 1.0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(4))
def test_trainer_denominator_is_the_definitions_normaliser(mode, seed):
    """Samples of random lengths (0 included), some outside the loss (loss_mask=False), some with a
    per-token response_mask (all zeros included)."""
    g = torch.Generator().manual_seed(100 + seed)
    B, T = 11 + seed, 17
    samples, rows = [], []
    for i in range(B):
        n = int(torch.randint(0, T + 1, (1,), generator=g))
        keep = bool(torch.rand(1, generator=g) < 0.75)
        sub = None
        if torch.rand(1, generator=g) < 0.3:
            sub = (torch.rand(n, generator=g) < (0.5 if i % 2 else 0.0)).int().tolist()
        samples.append(Sample(prompt_ids=[1], response_ids=list(range(n)), group_id=i, loss_mask=keep,
                              response_mask=sub))
        row = torch.zeros(T, dtype=f64)
        row[:n] = float(keep) * (torch.tensor(sub, dtype=f64) if sub is not None else 1.0)
        rows.append(row)
    mask = torch.stack(rows)                                          # (B, T), as trainer/batch.py packs it
    assert denominator(samples, mode, L) == float(normalizer(mode, mask, L).clamp_min(1))
