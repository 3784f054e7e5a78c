"""Samples -> micro-batches within a token budget.

Each micro-batch carries the padded token matrix for the model and, flattened over the
N scored positions (the response tokens), everything the loss needs: targets, advantages,
old / reference / rollout logprobs, mask and the sequence index of each token.

On Megatron's local attention (CPU, no Transformer Engine) sequences cannot share a row
without attending to each other or continuing each other's RoPE positions, so rows are
right-padded and samples are sorted by length before filling micro-batches: the padding is
what the longest sample of a micro-batch adds, no more. The budget counts padded tokens
(rows x longest row), so a micro-batch never costs more than ``token_budget``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from r1mega.types import Sample


@dataclass
class MicroBatch:
    tokens: torch.Tensor                 # (B, T) long, right-padded
    position_ids: torch.Tensor           # (B, T)
    select: torch.Tensor                 # (N,) flat index b*T + t of each position whose next token is scored
    targets: torch.Tensor                # (N,) the scored tokens
    seq_ids: torch.Tensor                # (N,) index of the token's sample in the mini-batch
    advantages: torch.Tensor             # (N,) fp32
    mask: torch.Tensor                   # (N,) fp32: 0 for samples dropped from the loss
    rollout_logp: torch.Tensor | None    # (N,) fp32 engine logprobs
    sample_ids: list[int] = field(default_factory=list)
    old_logp: torch.Tensor | None = None  # (N,) fp32 filled by trainer.logprobs
    ref_logp: torch.Tensor | None = None  # (N,) fp32 filled by trainer.logprobs

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def num_scored(self) -> int:
        return int(self.targets.numel())


def plan_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Group sample indices into micro-batches with rows x longest <= token_budget.

    Longest first, each micro-batch filled in order of decreasing length, so the rows of a
    micro-batch have similar lengths. Raises if one sample alone exceeds the budget.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = lengths[i]
        if n > token_budget:
            raise ValueError(f"a sample of {n} tokens exceeds trainer.micro_batch_tokens ({token_budget}); "
                             f"raise the budget or lower rollout.max_new_tokens / data.max_prompt_len")
        new_max = max(cur_max, n)
        if cur and (len(cur) + 1) * new_max > token_budget:
            batches.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def build_micro_batch(samples: list[Sample], ids: list[int], pad_id: int = 0) -> MicroBatch:
    """Pad the samples ``ids`` into one (B, T) micro-batch with flattened response positions."""
    rows = [samples[i] for i in ids]
    T = max(s.num_tokens for s in rows)
    B = len(rows)
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    select, targets, seq_ids, adv, mask, rlp = [], [], [], [], [], []
    have_rollout = all(s.rollout_logprobs is not None for s in rows)
    for b, (i, s) in enumerate(zip(ids, rows)):
        seq = s.prompt_ids + s.response_ids
        tokens[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        P, R = len(s.prompt_ids), len(s.response_ids)
        # position t predicts token t+1: response token j sits at P+j, predicted from P+j-1
        select.append(b * T + torch.arange(P - 1, P + R - 1))
        targets.append(torch.tensor(s.response_ids, dtype=torch.long))
        seq_ids.append(torch.full((R,), i, dtype=torch.long))
        adv.append(torch.full((R,), float(s.advantage)))
        mask.append(torch.full((R,), 1.0 if s.loss_mask else 0.0))
        if have_rollout:
            rlp.append(torch.tensor(s.rollout_logprobs, dtype=torch.float32))
    position_ids = torch.arange(T).unsqueeze(0).expand(B, -1).contiguous()
    return MicroBatch(tokens=tokens, position_ids=position_ids, select=torch.cat(select), targets=torch.cat(targets),
                      seq_ids=torch.cat(seq_ids), advantages=torch.cat(adv), mask=torch.cat(mask),
                      rollout_logp=torch.cat(rlp) if have_rollout else None, sample_ids=list(ids))


def pack(samples: list[Sample], token_budget: int, pad_id: int = 0) -> list[MicroBatch]:
    """All samples into micro-batches (samples with empty responses are skipped)."""
    keep = [i for i, s in enumerate(samples) if s.response_ids]
    plan = plan_micro_batches([samples[i].num_tokens for i in keep], token_budget)
    return [build_micro_batch(samples, [keep[j] for j in group], pad_id) for group in plan]
