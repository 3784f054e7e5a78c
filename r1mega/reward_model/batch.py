"""Sequences and preference pairs -> right-padded micro-batches within a token budget.

A reward is read at the last real token of each row; the model is causal, so the padding
after it changes nothing. A pair's chosen and rejected rows always share a micro-batch (the
Bradley-Terry loss needs both on the last pipeline stage): rows ``[0, P)`` are the chosen
responses, rows ``[P, 2P)`` the rejected ones, in the same pair order. The budget counts
padded tokens (rows x longest row), like :mod:`r1mega.trainer.batch`, whose planner is reused.
:func:`for_schedule` shapes a list of micro-batches for Megatron's pipeline schedules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch

from r1mega.trainer.batch import plan_micro_batches


@dataclass
class RewardBatch:
    tokens: torch.Tensor        # (B, T) long, right-padded
    position_ids: torch.Tensor  # (B, T)
    last: torch.Tensor          # (B,) index of each row's last real token (0 on padding rows)
    rows: int                   # real rows; rows >= this pad a pipeline batch to a fixed shape
    pairs: int = 0              # > 0: rows [0, pairs) chosen, [pairs, 2 pairs) rejected
    ids: list[int] = field(default_factory=list)  # input index of each real row (or of each pair)


def _build(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for b, s in enumerate(seqs):
        tokens[b, :len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    last = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long)
    position_ids = torch.arange(T).unsqueeze(0).expand(len(seqs), -1).contiguous()  # (B, T)
    return tokens, position_ids, last


def sequence_batches(seqs: Sequence[Sequence[int]], token_budget: int, pad_id: int = 0) -> list[RewardBatch]:
    """Micro-batches of whole sequences (for scoring); ``ids`` map rows back to ``seqs``."""
    for i, s in enumerate(seqs):
        if len(s) > token_budget:
            raise ValueError(f"sequence {i} has {len(s)} tokens, more than the micro-batch token budget "
                             f"({token_budget}); raise trainer.micro_batch_tokens")
    out = []
    for group in plan_micro_batches([len(s) for s in seqs], token_budget):
        tokens, pos, last = _build([seqs[i] for i in group], pad_id)
        out.append(RewardBatch(tokens=tokens, position_ids=pos, last=last, rows=len(group), ids=list(group)))
    return out


def pair_batches(pairs: Sequence, token_budget: int, pad_id: int = 0) -> list[RewardBatch]:
    """Micro-batches of whole pairs (:class:`~r1mega.reward_model.data.PreferencePair`), each costing
    2 rows; ``ids`` are the pair indices in ``pairs``."""
    for i, p in enumerate(pairs):
        if 2 * p.max_len > token_budget:
            src = f" (source row {p.index + 1})" if p.index >= 0 else ""
            raise ValueError(f"preference pair {i + 1}{src} needs 2 x {p.max_len} = {2 * p.max_len} "
                             f"tokens in one micro-batch (chosen and rejected together), more than "
                             f"trainer.micro_batch_tokens ({token_budget}); raise it")
    out = []
    for group in plan_micro_batches([p.max_len for p in pairs], token_budget // 2):
        rows = [pairs[i].chosen for i in group] + [pairs[i].rejected for i in group]
        tokens, pos, last = _build(rows, pad_id)
        out.append(RewardBatch(tokens=tokens, position_ids=pos, last=last, rows=len(rows), pairs=len(group),
                               ids=list(group)))
    return out


def pad_batches(batches: list[RewardBatch], pad_id: int = 0) -> list[RewardBatch]:
    """Pad every micro-batch to the largest (B, T) among them: pipeline p2p buffers need one shape."""
    B = max(b.tokens.shape[0] for b in batches)
    T = max(b.tokens.shape[1] for b in batches)
    out = []
    for b in batches:
        if tuple(b.tokens.shape) == (B, T):
            out.append(b)
            continue
        tokens = torch.full((B, T), pad_id, dtype=torch.long)
        tokens[:b.tokens.shape[0], :b.tokens.shape[1]] = b.tokens
        last = torch.zeros(B, dtype=torch.long)
        last[:b.last.shape[0]] = b.last
        out.append(dataclasses.replace(b, tokens=tokens, last=last,
                                       position_ids=torch.arange(T).unsqueeze(0).expand(B, -1).contiguous()))
    return out


def for_schedule(batches: list[RewardBatch], pipeline: int, interleaved: bool, pad_id: int = 0) -> list[RewardBatch]:
    """The micro-batches as Megatron's schedule needs them: under the interleaved pipeline schedule
    a multiple of ``pipeline`` of them (empty micro-batches, with no rows and so no loss, are
    appended), and with ``pipeline > 1`` all of one (B, T) shape (p2p buffers). Idempotent."""
    if interleaved and len(batches) % pipeline:
        empty = RewardBatch(tokens=torch.full((1, 1), pad_id, dtype=torch.long), rows=0,
                            position_ids=torch.zeros(1, 1, dtype=torch.long), last=torch.zeros(1, dtype=torch.long))
        batches = list(batches) + [empty] * (pipeline - len(batches) % pipeline)
    return pad_batches(batches, pad_id) if pipeline > 1 else list(batches)
