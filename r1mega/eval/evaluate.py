"""Held-out evaluation with the rollout engine: pass@1 over k samples, maj@k, greedy accuracy.

Prompts are split over the rollout engines (data parallel); each engine's first TP rank
scores its samples with the configured rule rewards; results are gathered so every rank
returns the same metrics.
"""

from __future__ import annotations

import torch.distributed as dist

from r1mega.config import Config
from r1mega.eval.metrics import PromptResult, summarize


def _pred(sample) -> str | None:
    info = sample.metadata.get("reward_info", {}).get("accuracy", {})
    return info.get("pred") if isinstance(info, dict) else None


def evaluate_engine(engine, records: list, cfg: Config, prefix: str = "eval/") -> dict[str, float]:
    """Metrics of the engine's current policy on ``records`` (keys prefixed with ``prefix``)."""
    from r1mega.rewards import score_samples

    e = cfg.eval
    records = records[: e.max_prompts] if e.max_prompts else records
    lo = len(records) * engine.dp_rank // engine.dp_size
    hi = len(records) * (engine.dp_rank + 1) // engine.dp_size
    mine = records[lo:hi]
    results: list[PromptResult] = []
    if mine:
        ids = [r.prompt_ids for r in mine]
        texts = [r.prompt_text for r in mine]
        sampled = engine.generate(ids, n=e.k, prompt_texts=texts, temperature=e.temperature, top_p=e.top_p,
                                  expected_version=engine.policy_version)
        greedy = engine.generate(ids, n=1, prompt_texts=texts, temperature=0.0, top_p=1.0,
                                 expected_version=engine.policy_version) if e.greedy else []
        for s in sampled + greedy:
            rec = mine[s.group_id]
            s.answer, s.kind = rec.answer, rec.kind
            s.metadata.update(rec.metadata)
        if engine.tp_rank == 0:
            score_samples(sampled + greedy, cfg.reward)
            for i, rec in enumerate(mine):
                group = [s for s in sampled if s.group_id == i]
                g = [s for s in greedy if s.group_id == i]
                results.append(PromptResult(
                    correct=[s.reward_breakdown.get("accuracy", 0.0) >= 1.0 for s in group],
                    answers=[_pred(s) for s in group], reference=rec.answer,
                    response_lens=[len(s.response_ids) for s in group],
                    greedy_correct=(g[0].reward_breakdown.get("accuracy", 0.0) >= 1.0) if g else None))
    if dist.is_initialized() and dist.get_world_size() > 1:
        parts: list = [None] * dist.get_world_size()
        dist.all_gather_object(parts, results)
        results = [r for p in parts for r in p]
    if not results:
        return {}
    return {prefix + k: float(v) for k, v in summarize(results).items()}
