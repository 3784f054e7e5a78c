"""Rollout-vs-trainer logprob parity: the check that the engine samples from the policy.

The engine returns ``processed_logprobs`` (see :mod:`r1mega.rollout.sampling`):
``log_softmax(logits / T)[token]`` for each response token. The trainer re-scores the same
tokens at the same temperature; :func:`logprob_parity` reports how far apart they are.
:func:`reference_logprobs` is that trainer-side quantity for a Hugging Face causal LM, used as
the ground truth in tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from r1mega.types import Sample


def logprob_parity(samples: Sequence[Sample], trainer_logprobs: Sequence[Sequence[float] | torch.Tensor],
                   max_tokens: int | None = None, prefix: str = "rollout/") -> dict[str, float]:
    """Mean and max ``|logp_trainer - logp_rollout|`` over response tokens, as metrics.

    ``trainer_logprobs[i]`` holds one logprob per token of ``samples[i].response_ids``.
    ``max_tokens`` (e.g. ``rollout.parity_tokens``) compares only the first that many tokens
    in sample order (None = all). Returns ``{prefix}logprob_diff_mean``, ``..._max`` and
    ``{prefix}logprob_parity_tokens`` (0 tokens -> diffs of 0.0).
    """
    if len(samples) != len(trainer_logprobs):
        raise ValueError(f"{len(samples)} samples but {len(trainer_logprobs)} trainer logprob rows")
    diffs = []
    budget = float("inf") if max_tokens is None else max_tokens
    for i, (s, lp) in enumerate(zip(samples, trainer_logprobs)):
        if budget <= 0:
            break
        if s.rollout_logprobs is None:
            raise ValueError(f"sample {i} has no rollout_logprobs")
        rollout = torch.as_tensor(s.rollout_logprobs, dtype=torch.float64)
        trainer = torch.as_tensor(lp, dtype=torch.float64).detach().cpu().flatten()
        if trainer.numel() != rollout.numel():
            raise ValueError(f"sample {i}: {rollout.numel()} response tokens but "
                             f"{trainer.numel()} trainer logprobs")
        k = int(min(budget, rollout.numel()))
        diffs.append((trainer[:k] - rollout[:k]).abs())
        budget -= k
    d = torch.cat(diffs) if diffs else torch.zeros(0, dtype=torch.float64)
    finite = torch.isfinite(d)
    return {
        f"{prefix}logprob_diff_mean": float(d[finite].mean()) if finite.any() else 0.0,
        f"{prefix}logprob_diff_max": float(d.max()) if d.numel() else 0.0,
        f"{prefix}logprob_parity_tokens": float(d.numel()),
    }


@torch.no_grad()
def reference_logprobs(model: torch.nn.Module, samples: Sequence[Sample],
                       temperature: float = 1.0) -> list[torch.Tensor]:
    """``log_softmax(logits / T)[y_t]`` of each response token under a HF causal LM (fp32).

    One forward per sample over ``prompt_ids + response_ids`` (no padding, so no mask
    subtleties). ``temperature == 0`` (greedy) scores at T = 1, as vLLM does.
    """
    t = temperature if temperature > 0 else 1.0
    out = []
    for s in samples:
        ids = torch.tensor([s.prompt_ids + s.response_ids])                    # (1, T)
        logits = model(input_ids=ids).logits[0].float()                          # (T, V)
        p = len(s.prompt_ids)
        logp = torch.log_softmax(logits[p - 1:-1] / t, dim=-1)                   # (R, V)
        out.append(logp.gather(1, torch.tensor(s.response_ids)[:, None])[:, 0])  # (R,)
    return out
