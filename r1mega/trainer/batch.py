"""Samples -> micro-batches within a token budget.

Each micro-batch carries the token matrix for the model and, flattened over the N scored
positions (the response tokens), everything the loss needs: targets, advantages, old /
reference / rollout logprobs, mask and the sequence index of each token.

Two layouts:

* **padded** (``packed=False``): one sample per row, rows right-padded, samples sorted by
  length before filling micro-batches so the padding is what the longest sample of a
  micro-batch adds. The budget counts padded tokens (rows x longest row).
* **packed** (``packed=True``): samples concatenated into one row of at most ``token_budget``
  tokens (first-fit decreasing), with ``segments`` recording each sample's length. Attention
  is confined to each sample: a block-diagonal causal mask on Megatron's local attention (CPU)
  or THD ``PackedSeqParams`` on Transformer Engine. RoPE depends only on the distance between
  query and key, so a sample's logits do not depend on where in the row it sits; position ids
  restart at 0 for every sample.
"""

from __future__ import annotations

import dataclasses
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
    mask: torch.Tensor                   # (N,) fp32: 0 for samples (or tokens) carrying no loss
    rollout_logp: torch.Tensor | None    # (N,) fp32 engine logprobs
    sample_ids: list[int] = field(default_factory=list)
    segments: list[int] | None = None    # packed (B == 1): lengths of the samples in the row, then padding
    old_logp: torch.Tensor | None = None  # (N,) fp32 filled by trainer.logprobs
    ref_logp: torch.Tensor | None = None  # (N,) fp32 filled by trainer.logprobs
    versions: torch.Tensor | None = None  # (N,) long: the policy version that generated each token
    routing: torch.Tensor | None = None   # (B, T, L_moe, k) int16 expert ids to replay per token and MoE
                                          # layer, -1 = routed by the trainer (r1mega.models.routing_replay)

    def to(self, device: torch.device | str) -> "MicroBatch":
        """This micro-batch with every tensor on ``device`` (the trainer's GPU; the same object on CPU)."""
        device = torch.device(device)
        if self.tokens.device == device:
            return self
        moved = {f: getattr(self, f).to(device, non_blocking=True) for f in _TENSOR_FIELDS
                 if getattr(self, f) is not None}
        return dataclasses.replace(self, **moved)

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.numel())

    @property
    def num_scored(self) -> int:
        return int(self.targets.numel())

    def attention_mask(self) -> torch.Tensor | None:
        """Packed rows: (1, 1, T, T) bool, True where attention is blocked (Megatron's convention):
        causal inside each segment, nothing across segments. None for padded rows (plain causal)."""
        if self.segments is None:
            return None
        T = self.tokens.shape[1]
        seg = torch.repeat_interleave(torch.arange(len(self.segments)), torch.tensor(self.segments))  # (T,)
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        allowed = causal & (seg[:, None] == seg[None, :])
        return (~allowed).view(1, 1, T, T)

    def cu_seqlens(self) -> torch.Tensor:
        """Packed rows: int32 cumulative segment lengths [0, l0, l0+l1, ...] (THD attention)."""
        if self.segments is None:
            raise ValueError("cu_seqlens is defined for packed micro-batches only")
        return torch.tensor([0] + self.segments, dtype=torch.int32).cumsum(0, dtype=torch.int32)


_TENSOR_FIELDS = ("tokens", "position_ids", "select", "targets", "seq_ids", "advantages", "mask", "rollout_logp",
                  "old_logp", "ref_logp", "versions")  # routing stays on the CPU: the trainer moves each layer's slice


def plan_micro_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Group sample indices into padded micro-batches with rows x longest <= token_budget.

    Longest first, each micro-batch filled in order of decreasing length, so the rows of a
    micro-batch have similar lengths. Raises if one sample alone exceeds the budget.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = lengths[i]
        _check_fits(n, token_budget)
        new_max = max(cur_max, n)
        if cur and (len(cur) + 1) * new_max > token_budget:
            batches.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        batches.append(cur)
    return batches


def plan_packed_rows(lengths: list[int], token_budget: int) -> list[list[int]]:
    """First-fit decreasing bin packing of samples into rows of at most ``token_budget`` tokens.

    FFD uses at most 11/9 OPT + 6/9 rows (Dósa 2007); rows keep their samples in decreasing
    length, so the plan is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        _check_fits(n, token_budget)
        for r, room in enumerate(free):
            if n <= room:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(token_budget - n)
    return rows


def _check_fits(n: int, token_budget: int) -> None:
    if n > token_budget:
        raise ValueError(f"a sample of {n} tokens exceeds trainer.micro_batch_tokens ({token_budget}); "
                         f"raise the budget or lower rollout.max_new_tokens / data.max_prompt_len")


def _scored(s: Sample) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets (R,), mask (R,)) of one sample's response tokens."""
    R = len(s.response_ids)
    if s.response_mask is not None and len(s.response_mask) != R:
        raise ValueError(f"response_mask has {len(s.response_mask)} entries for {R} response tokens")
    mask = torch.full((R,), 1.0 if s.loss_mask else 0.0)
    if s.response_mask is not None:
        mask = mask * torch.tensor(s.response_mask, dtype=torch.float32)
    return torch.tensor(s.response_ids, dtype=torch.long), mask


def build_micro_batch(samples: list[Sample], ids: list[int], pad_id: int = 0, *, packed: bool = False,
                      row_len: int | None = None) -> MicroBatch:
    """The samples ``ids`` as one micro-batch: one padded row each, or (``packed``) one row of
    ``row_len`` (default: their total length) tokens holding all of them."""
    rows = [samples[i] for i in ids]
    lengths = [s.num_tokens for s in rows]
    if packed:
        B, T = 1, row_len or sum(lengths)
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
    else:
        B, T = len(rows), max(lengths)
        starts = [b * T for b in range(B)]  # flat offset of each sample's first token
    tokens = torch.full((B * T,), pad_id, dtype=torch.long)
    position_ids = torch.zeros(B * T, dtype=torch.long)
    select, targets, seq_ids, adv, mask, rlp, versions = [], [], [], [], [], [], []
    have_rollout = all(s.rollout_logprobs is not None for s in rows)
    for i, s, start in zip(ids, rows, starts):
        seq = s.prompt_ids + s.response_ids
        tokens[start:start + len(seq)] = torch.tensor(seq, dtype=torch.long)
        position_ids[start:start + len(seq)] = torch.arange(len(seq))
        P, R = len(s.prompt_ids), len(s.response_ids)
        # position t predicts token t+1: response token j sits at P+j, predicted from P+j-1
        select.append(start + torch.arange(P - 1, P + R - 1))
        tgt, m = _scored(s)
        targets.append(tgt)
        mask.append(m)
        seq_ids.append(torch.full((R,), i, dtype=torch.long))
        adv.append(torch.full((R,), float(s.advantage)))
        if have_rollout:
            rlp.append(torch.tensor(s.rollout_logprobs, dtype=torch.float32))
        versions.append(torch.tensor(s.token_versions or [s.policy_version] * R, dtype=torch.long))
    routing = _routing(rows, starts, B * T)
    segments = None
    if packed:
        used = sum(lengths)
        if used > T:
            raise ValueError(f"{used} tokens do not fit a packed row of {T}")
        segments = lengths + ([T - used] if T > used else [])
    else:
        for b, n in enumerate(lengths):  # padding continues the positions (never attended to)
            position_ids[b * T + n:(b + 1) * T] = torch.arange(n, T)
    return MicroBatch(tokens=tokens.view(B, T), position_ids=position_ids.view(B, T), select=torch.cat(select),
                      targets=torch.cat(targets), seq_ids=torch.cat(seq_ids), advantages=torch.cat(adv),
                      mask=torch.cat(mask), rollout_logp=torch.cat(rlp) if have_rollout else None,
                      sample_ids=list(ids), segments=segments, versions=torch.cat(versions),
                      routing=None if routing is None else routing.view(B, T, *routing.shape[1:]))


def _routing(rows: list[Sample], starts: list[int], flat: int) -> torch.Tensor | None:
    """(B*T, L_moe, k) int16 engine routing of the rows' tokens at their flat offsets, -1 elsewhere;
    None when no sample carries any (Sample.routed_experts)."""
    have = [s.routed_experts for s in rows if s.routed_experts is not None]
    if not have:
        return None
    from r1mega.rollout.routing_capture import expand

    out = torch.full((flat, *have[0].shape[1:]), -1, dtype=torch.int16)
    for s, start in zip(rows, starts):
        if s.routed_experts is None:
            continue
        ids = expand(s.routed_experts)
        if ids.shape[0] != s.num_tokens or ids.shape[1:] != out.shape[1:]:
            raise ValueError(f"routed_experts of shape {tuple(ids.shape)} for a sample of {s.num_tokens} tokens "
                             f"(expected ({s.num_tokens}, {out.shape[1]}, {out.shape[2]}))")
        out[start:start + s.num_tokens] = ids.to(torch.int16)
    return out


def split_to_multiple(plan: list[list[int]], multiple_of: int) -> list[list[int]]:
    """Split the largest groups in two until the number of groups is a multiple of ``multiple_of``
    (Megatron's interleaved pipeline schedule needs a multiple of the pipeline size)."""
    plan = [list(g) for g in plan]
    while len(plan) % multiple_of:
        big = max(range(len(plan)), key=lambda g: len(plan[g]))
        if len(plan[big]) < 2:
            raise ValueError(f"the interleaved pipeline schedule needs a multiple of {multiple_of} micro-batches "
                             f"(the pipeline size) but there are only {len(plan)} samples to train on; give "
                             f"each data-parallel rank more samples or use parallel.virtual_pipeline=null")
        g = plan.pop(big)
        plan[big:big] = [g[:len(g) // 2], g[len(g) // 2:]]
    return plan


def pack(samples: list[Sample], token_budget: int, pad_id: int = 0, *, packed: bool = False,
         multiple_of: int = 1) -> list[MicroBatch]:
    """All samples into micro-batches (samples with empty responses are skipped); with
    ``multiple_of``, as many micro-batches as the next multiple of it (by splitting the largest)."""
    keep = [i for i, s in enumerate(samples) if s.response_ids]
    lengths = [samples[i].num_tokens for i in keep]
    plan = (plan_packed_rows if packed else plan_micro_batches)(lengths, token_budget)
    if multiple_of > 1:
        plan = split_to_multiple(plan, multiple_of)
    return [build_micro_batch(samples, [keep[j] for j in group], pad_id, packed=packed) for group in plan]
