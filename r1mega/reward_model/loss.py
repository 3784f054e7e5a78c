"""The Bradley-Terry pairwise loss and the pair metrics (pure tensor functions).

Bradley & Terry (1952): P(chosen > rejected) = sigmoid(r_chosen - r_rejected). A reward model
is fitted by maximising the likelihood of the human (or rule) preferences, as in InstructGPT
(Ouyang et al. 2022, arXiv:2203.02155, eq. 1) and DeepSeek-R1's general-data reward model:

    loss = -1/P * sum_p log sigmoid(r_chosen_p - r_rejected_p)

``F.logsigmoid`` is the stable form (no overflow for large negative margins).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair loss ``-log sigmoid(r_chosen - r_rejected)``, shape (P,), fp32."""
    if r_chosen.shape != r_rejected.shape or r_chosen.dim() != 1:
        raise ValueError(f"r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} must be "
                         f"1-D tensors of the same length (one reward per pair)")
    return -F.logsigmoid(r_chosen.float() - r_rejected.float())


def pair_sums(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> dict[str, float]:
    """Sums over pairs (to be added across micro-batches and ranks, then divided by ``pairs``):
    ``loss``, ``correct`` (r_chosen > r_rejected; a tie counts 1/2: pairwise accuracy), ``margin``
    (r_chosen - r_rejected), ``score`` and ``score_sq`` over all 2P rewards (for mean/std)."""
    rc, rr = r_chosen.detach().double(), r_rejected.detach().double()
    margin = rc - rr
    both = torch.cat([rc, rr])
    return {"pairs": float(rc.numel()), "loss": float(bradley_terry_loss(rc, rr).sum()),
            "correct": float((margin > 0).sum() + 0.5 * (margin == 0).sum()), "margin": float(margin.sum()),
            "score": float(both.sum()), "score_sq": float((both * both).sum())}


def pair_metrics(sums: dict[str, float]) -> dict[str, float]:
    """Means from :func:`pair_sums` totals: loss, accuracy, margin, score_mean, score_std."""
    n = sums.get("pairs", 0.0)
    if n <= 0:
        return {"pairs": 0.0}
    mean = sums["score"] / (2 * n)
    var = max(sums["score_sq"] / (2 * n) - mean * mean, 0.0)
    return {"pairs": n, "loss": sums["loss"] / n, "accuracy": sums["correct"] / n, "margin": sums["margin"] / n,
            "score_mean": mean, "score_std": var ** 0.5}
