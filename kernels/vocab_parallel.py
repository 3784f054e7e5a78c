"""Vocab-parallel plumbing (Megatron-style TP LM head).

Each TP rank holds a contiguous vocabulary shard ``weight[vocab_start : vocab_start + Vs]``
and the *same* (replicated) hidden states. Forward: every rank computes softmax statistics
(max, sum-exp, first moment, target logit; see ``_common``) over its shard; one all-gather of
the small (4, T) fp32 tensor lets each rank combine them exactly, so logp / entropy / loss are
identical to TP=1 on every rank. Backward: dW is the local shard's gradient; each rank's dX is
a partial sum over its shard, so dX is all-reduced (SUM) inside backward and every rank gets the
full gradient of the replicated input (the role of Megatron's copy-to-TP-region on the input).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ._common import combine_stats


def tp_world(tp_group) -> tuple[int, int]:
    """(rank, size) in ``tp_group``; (0, 1) when it is None."""
    if tp_group is None:
        return 0, 1
    return dist.get_rank(group=tp_group), dist.get_world_size(group=tp_group)


def default_vocab_start(tp_group, vocab_shard: int, vocab_start) -> int:
    if vocab_start is not None:
        return int(vocab_start)
    rank, _ = tp_world(tp_group)
    return rank * vocab_shard


def global_vocab_size(tp_group, vocab_shard: int) -> int:
    """Sum of shard sizes over the group (shards may differ in size)."""
    if tp_group is None:
        return vocab_shard
    t = torch.tensor([vocab_shard], dtype=torch.int64)
    if dist.get_backend(tp_group) == "nccl":
        t = t.cuda()
    dist.all_reduce(t, group=tp_group)
    return int(t.item())


def combine_across_tp(local: torch.Tensor, tp_group) -> torch.Tensor:
    """(4, T) local shard statistics -> (4, T) statistics over the full vocabulary (one all-gather)."""
    _, size = tp_world(tp_group)
    if size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(size)]
    dist.all_gather(parts, local.contiguous(), group=tp_group)
    return combine_stats(torch.stack(parts))  # (P, 4, T) -> (4, T)


def allreduce_dx(dx: torch.Tensor, tp_group) -> torch.Tensor:
    """Sum the partial input gradients of all vocab shards (in place)."""
    if tp_group is not None and dist.get_world_size(group=tp_group) > 1:
        dist.all_reduce(dx, group=tp_group)
    return dx
