"""``r1mega reject-sample``: sample k responses per prompt with the rollout engine, score them with
the rule rewards, keep what :func:`r1mega.rejection.filters.select` keeps, write an SFT dataset.

    prompts (data.*) -> sample_groups(n=k) -> score_groups -> Candidates -> select -> files

Under torchrun every process builds its engine shard (as in training); rollout-DP rank ``d`` of
``D`` samples prompts ``d, d + D, ...`` (seed ``rollout.seed + d``), the first TP rank of each
engine scores them, all candidates are gathered to every rank, and global rank 0 writes:

    DIR/sft.jsonl       kept: prompt (rendered text), response, question, answer, reward, scores, ...
    DIR/dropped.jsonl   the rest, each with its reason and detail (the measured value)
    DIR/unsolved.jsonl  prompts without a kept response, with their responses' reasons (rejection.record_unsolved)
    DIR/stats.json      counts (see filters.selection_stats), the config, the model; written last

Each file is written to ``<name>.tmp`` and renamed, so a reader never sees a partial file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from typing import Any, Sequence

from r1mega.config import Config, ConfigError, to_dict
from r1mega.config.base import apply_override, from_dict, parse_override, validate_tree
from r1mega.rejection.config import RejectionConfig
from r1mega.rejection.filters import Candidate, Selection, select

SECTION = "rejection"


def load_configs(path: str | None, overrides: Sequence[str] = ()) -> tuple[Config, RejectionConfig]:
    """The run config and the ``rejection`` section from one YAML file plus ``key=value`` overrides
    (``rejection.k=8`` goes to the section, everything else to :class:`~r1mega.config.Config`).
    Errors name the file and the overrides, as :func:`r1mega.config.load_config` does."""
    from r1mega.config import config_from_dict, read_yaml, split_config_arg

    path, overrides = split_config_arg(path, overrides)
    data = read_yaml(path)

    def build(d: dict) -> tuple[Config, RejectionConfig]:
        d = dict(d)
        section = d.pop(SECTION, None) or {}
        rcfg = from_dict(RejectionConfig, section, prefix=SECTION)
        validate_tree(rcfg)
        return config_from_dict(d), rcfg

    if path is not None:
        try:
            build(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value)
    try:
        return build(data)
    except ConfigError as e:
        if overrides:
            raise ConfigError(f"{e} (with the command-line overrides {list(overrides)})") from None
        raise


def scoring_config(cfg: Config, rcfg: RejectionConfig, records: list = ()):
    """``cfg.reward`` with the correctness reward of every record (``rejection.correctness_reward``)
    scored too (weight 0 when absent, so the weighted reward is unchanged)."""
    from r1mega.rewards.correctness import with_correctness_rewards

    metas = [r.metadata for r in records] or [{}]
    return dataclasses.replace(cfg.reward, weights=with_correctness_rewards(cfg.reward.weights, metas, rcfg.judge))


def to_candidates(samples: list, records: list, questions: dict[int, str], k: int) -> list[Candidate]:
    """Scored engine Samples (prompt-major, ``k`` per record) -> Candidates."""
    out = []
    for j, s in enumerate(samples):
        rec = records[j // k]
        extra = {key: v for key, v in rec.metadata.items() if key not in ("source", "row")}
        flags = ("error", "timeout")
        out.append(Candidate(
            prompt_index=rec.index, sample_index=j % k, prompt=rec.prompt_text, response=s.response_text,
            response_tokens=len(s.response_ids), finish_reason=s.finish_reason,
            scores={n: v for n, v in s.reward_breakdown.items() if n not in flags}, reward=s.reward,
            error=any(s.reward_breakdown.get(f, 0.0) for f in flags), question=questions.get(rec.index),
            answer=rec.answer, language=extra.get("language"), metadata=extra))
    return out


def sample_and_score(engine, records: list, questions: dict[int, str], cfg: Config, rcfg: RejectionConfig,
                     *, progress: bool = True) -> list[Candidate]:
    """This engine's share of ``records`` (DP rank d of D: records d, d + D, ...), k samples each,
    scored on the engine's first TP rank; returns every engine's candidates (gathered)."""
    import torch.distributed as dist

    from r1mega.logging.progress import StepProgress
    from r1mega.rollout.groups import gather_groups, sample_groups, score_groups

    mine = records[engine.dp_rank::engine.dp_size]
    k, reward_cfg = rcfg.k, scoring_config(cfg, rcfg, mine)
    rank = dist.get_rank() if dist.is_initialized() else 0
    bar = StepProgress(len(mine), rank=rank, enabled=progress, desc="reject-sample (prompts)")
    cands: list[Candidate] = []
    n_correct = n_tokens = 0
    for start in range(0, len(mine), rcfg.batch_prompts):
        batch = mine[start:start + rcfg.batch_prompts]
        samples = sample_groups(engine, batch, k, expected_version=engine.policy_version)
        score_groups(engine, samples, reward_cfg)
        if engine.tp_rank == 0:  # the scored copy
            new = to_candidates(samples, batch, questions, k)
            cands += new
            n_correct += sum(c.scores.get(rcfg.judge(c.metadata), 0.0) >= rcfg.min_score for c in new)
            n_tokens += sum(c.response_tokens for c in new)
        bar.update(start + len(batch), {"acc/mean": n_correct / max(len(cands), 1),
                                        "response/len_mean": n_tokens / max(len(cands), 1)})
    bar.close()
    return gather_groups(engine, cands)


def _row(c: Candidate) -> dict[str, Any]:
    return {"prompt": c.prompt, "response": c.response, "question": c.question, "answer": c.answer,
            "reward": c.reward, "scores": c.scores, "prompt_index": c.prompt_index, "sample_index": c.sample_index,
            "response_tokens": c.response_tokens, "finish_reason": c.finish_reason, "language": c.language,
            "metadata": c.metadata}


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_outputs(out_dir: str, sel: Selection, rcfg: RejectionConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Write the files of the module docstring; returns the stats.json content."""
    os.makedirs(out_dir, exist_ok=True)
    _write_atomic(os.path.join(out_dir, "sft.jsonl"), _jsonl(_row(c) for c in sel.kept))
    _write_atomic(os.path.join(out_dir, "dropped.jsonl"),
                  _jsonl({**_row(d.candidate), "reason": d.reason, "detail": d.detail} for d in sel.dropped))
    unsolved_path = os.path.join(out_dir, "unsolved.jsonl")
    if rcfg.record_unsolved:
        reasons: dict[int, Counter] = {p: Counter() for p in sel.unsolved}
        first: dict[int, Candidate] = {}
        for d in sel.dropped:
            if d.candidate.prompt_index in reasons:
                reasons[d.candidate.prompt_index][d.reason] += 1
                first.setdefault(d.candidate.prompt_index, d.candidate)
        _write_atomic(unsolved_path, _jsonl(
            {"prompt_index": p, "question": first[p].question, "answer": first[p].answer, "prompt": first[p].prompt,
             "reasons": dict(reasons[p])} for p in sel.unsolved))
    elif os.path.exists(unsolved_path):  # a previous run's file would describe other results
        os.remove(unsolved_path)
    stats = {**sel.stats, **info, "rejection": to_dict(rcfg)}
    _write_atomic(os.path.join(out_dir, "stats.json"), json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    return stats


def run_reject_sample(cfg: Config, rcfg: RejectionConfig, model_dir: str, prompts: str, out_dir: str, *,
                      engine=None, progress: bool = True) -> dict[str, Any]:
    """The whole command on this rank; returns the stats (on every rank). ``model_dir``: an HF
    model directory; ``engine``: an existing :class:`~r1mega.rollout.RolloutEngine` to reuse
    (tests), else one is built as training builds it. Prompt errors (:class:`DataError`, naming
    file, row and key) come before the engine is built."""
    import torch.distributed as dist

    from r1mega.data.prompts import load_prompts, read_rows
    from r1mega.data.tokenizer import load_tokenizer

    t0 = time.monotonic()
    rcfg.validate()
    d = cfg.data
    tok = load_tokenizer(cfg.model.tokenizer_path or model_dir)
    records = load_prompts(prompts, tok, split=d.split, question_key=d.question_key, answer_key=d.answer_key,
                           template=d.template, max_prompt_len=d.max_prompt_len)
    rows = read_rows(prompts, d.split)
    questions = {r.index: str(rows[r.index][d.question_key]) for r in records}
    own_engine = engine is None
    if own_engine:
        from r1mega.rollout.groups import make_engine

        engine = make_engine(cfg, model_dir)
    try:
        cands = sample_and_score(engine, records, questions, cfg, rcfg, progress=progress)
    finally:
        if own_engine:
            engine.shutdown()  # frees vLLM's groups (another engine may be built in this process)
    sel = select(cands, rcfg, language=rcfg.language or cfg.reward.language)
    info = {"k": rcfg.k, "model": model_dir, "prompts_source": prompts, "rollout_data_parallel": engine.dp_size,
            "seconds": round(time.monotonic() - t0, 3)}
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        return write_outputs(out_dir, sel, rcfg, info)
    return {**sel.stats, **info, "rejection": to_dict(rcfg)}
