"""Groups of samples from the colocated engine: the one rollout path of RL training, evaluation
and rejection sampling.

    engine  = make_engine(cfg, model_path)                  # this rank's engine shard
    samples = sample_groups(engine, records, n, ...)        # n per prompt, with its answer/kind/metadata
    score_groups(engine, samples, cfg.reward)               # rule rewards on the engine's first TP rank
    every   = gather_groups(engine, local)                  # every engine's share, on every rank

Each rollout-DP engine gets its own prompts (the caller shards them by ``engine.dp_rank``); the
ranks of one TP engine pass identical prompts and get identical samples, so only the first
scores them and contributes them to the gather. :func:`rollout_groups` is the RL step's
rollout: the above between waking the engine and putting it back to sleep;
:func:`partial_rollout_groups` its partial form (``rollout.mode=partial``), which carries
unfinished responses to the next step in a :class:`~r1mega.rollout.partial.PartialBuffer`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from r1mega.rollout.partial import PartialBuffer, extend
from r1mega.types import Sample

if TYPE_CHECKING:
    from r1mega.config import Config
    from r1mega.data.prompts import PromptRecord
    from r1mega.rewards import RewardConfig
    from r1mega.rollout.engine import RolloutEngine


def make_engine(cfg: Config, model_path: str, *, data_parallel: tuple[int, int] | None = None) -> RolloutEngine:
    """This rank's vLLM engine for the HF model at ``model_path`` (colocated; or, with
    ``data_parallel`` = (index, count), one of the rollout-only ranks of async RL)."""
    from r1mega.rollout.engine import RolloutEngine

    cfg.check_rollout_lengths()
    extra = {"tokenizer": cfg.model.tokenizer_path} if cfg.model.tokenizer_path else {}
    context = cfg.rollout.max_model_len or cfg.model.max_seq_len
    rollout = cfg.rollout
    if rollout.kv_cache_memory_mb is None:
        from r1mega.models import read_hf_config
        # partial rollout: the step's new groups and those carried from earlier steps in flight at once
        in_flight = 2 if rollout.mode == "partial" else 1
        rollout = dataclasses.replace(rollout, kv_cache_memory_mb=step_kv_cache_mb(
            read_hf_config(model_path), in_flight * cfg.data.prompts_per_step * cfg.algorithm.group_size, context,
            cfg.parallel.rollout_tensor, cfg.model.dtype))
    return RolloutEngine(model_path, rollout, rollout_tensor=cfg.parallel.rollout_tensor, dtype=cfg.model.dtype,
                         max_model_len=context, data_parallel=data_parallel,
                         return_routed_experts=rollout.return_routed_experts or cfg.algorithm.routing_replay == "r3",
                         **extra)


def step_kv_cache_mb(arch, sequences: int, context: int, rollout_tensor: int, dtype: str) -> int:
    """CPU KV cache (MiB) for ``sequences`` sequences of up to ``context`` tokens on one engine rank,
    +25%, at least 32 MiB: a step's samples all in flight at once, and no more (vLLM touches every
    page of its KV cache at start: an oversized cache is resident memory for nothing). Larger
    batches (evaluation) still run, in waves."""
    from r1mega.models.params import kv_bytes_per_token

    act_bytes = 2 if dtype in ("bfloat16", "float16") else 4
    need = kv_bytes_per_token(arch, rollout_tensor, act_bytes) * sequences * context * 1.25
    return max(32, math.ceil(need / 2**20))


def sample_groups(engine: RolloutEngine, records: Sequence[PromptRecord], n: int, *,
                  expected_version: int | None, group_offset: int = 0, **sampling: Any) -> list[Sample]:
    """``n`` samples per record, prompt-major (sample ``i*n + j`` has ``group_id = group_offset + i``),
    each carrying its record's answer, kind and metadata. ``sampling``: per-call sampling fields
    (``temperature``, ``top_p``, ...; see :meth:`RolloutEngine.generate`)."""
    samples = engine.generate([r.prompt_ids for r in records], n=n, prompt_texts=[r.prompt_text for r in records],
                              expected_version=expected_version, group_offset=group_offset, **sampling)
    for s in samples:
        rec = records[s.group_id - group_offset]
        s.answer, s.kind = rec.answer, rec.kind
        s.metadata.update(rec.metadata)
    return samples


def score_groups(engine: RolloutEngine, samples: list[Sample], reward_cfg: RewardConfig, *,
                 skip_kinds: Sequence[str] = ()) -> None:
    """Rule rewards, in place, on the engine's first TP rank (its peers hold the same samples and
    leave theirs unscored). Samples of a kind in ``skip_kinds`` are left alone."""
    from r1mega.rewards import score_samples

    mine = [s for s in samples if s.kind not in skip_kinds]
    if engine.tp_rank == 0 and mine:
        score_samples(mine, reward_cfg)


def gather_groups(engine: RolloutEngine, local: list) -> list:
    """Every engine's ``local`` items (samples, or what was made of them), in rank order, on every
    rank. Collective; only each engine's first TP rank contributes."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(local)
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local if engine.tp_rank == 0 else [])
    return [x for p in parts for x in p]


def rollout_groups(engine: RolloutEngine, prompts: Sequence[PromptRecord], n: int, *, version: int) -> list[Sample]:
    """The RL step's rollout: ``n`` samples per prompt of this engine's share, generated with policy
    ``version`` (group ids global over the rollout-DP engines, which all get as many prompts)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the trainer's cached activations would count against vLLM's budget
    engine.wake_up()  # weights are awake after a sync, but an evaluation may have put them to sleep
    samples = sample_groups(engine, prompts, n, expected_version=version, group_offset=engine.dp_rank * len(prompts))
    engine.sleep()
    return samples


@dataclasses.dataclass
class PartialStats:
    """One engine's partial-rollout step: what it generated and what it left in flight."""

    rounds: int = 0
    generated_tokens: int = 0
    trained_groups: int = 0
    in_flight_groups: int = 0    # left in the buffer, unfinished
    waiting_groups: int = 0      # left in the buffer, complete (beyond this step's batch)


def partial_rollout_groups(engine: RolloutEngine, buffer: PartialBuffer, prompts: Sequence[PromptRecord], n: int, *,
                           version: int, chunk: int, min_share: float,
                           max_lag: int | None = None) -> tuple[list[Sample], PartialStats]:
    """The RL step's partial rollout (r1mega.rollout.partial): this engine's new prompts join the
    buffer as ``n`` empty responses each; rounds of at most ``chunk`` new tokens per unfinished
    response run (at least one) until ``min_share`` of ``len(prompts)`` groups are complete and no
    group started ``max_lag`` or more versions ago is unfinished, or nothing is left to generate.
    Returns the oldest complete groups, at most ``len(prompts)``, with step-local group ids (as
    :func:`rollout_groups` numbers them), and the step's statistics."""
    quota = len(prompts)
    offset = engine.dp_rank * quota
    buffer.add_groups([Sample(prompt_ids=list(r.prompt_ids), response_ids=[], group_id=offset + i,
                              rollout_logprobs=[], finish_reason="length", policy_version=version,
                              prompt_text=r.prompt_text, answer=r.answer, kind=r.kind, metadata=dict(r.metadata))
                       for i, r in enumerate(prompts) for _ in range(n)])
    need = math.ceil(min_share * quota - 1e-9)
    stats = PartialStats()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    engine.wake_up()
    while True:
        todo = buffer.unfinished()
        if not todo:
            break
        pieces = engine.continue_samples([s for _, _, s in todo], chunk=chunk, max_new_tokens=buffer.max_new_tokens,
                                         expected_version=version)
        for (key, i, s), piece in zip(todo, pieces):
            buffer.update(key, i, extend(s, piece))
            stats.generated_tokens += len(piece.response_ids)
        stats.rounds += 1
        if len(buffer.complete_keys()) >= need and not buffer.overdue(version, max_lag):
            break
    engine.sleep()
    groups = buffer.pop_complete(limit=quota)
    stats.trained_groups = len(groups)
    stats.waiting_groups = len(buffer.complete_keys())
    stats.in_flight_groups = len(buffer) - stats.waiting_groups
    samples = [s.replace(group_id=offset + j) for j, group in enumerate(groups) for s in group]
    return samples, stats
