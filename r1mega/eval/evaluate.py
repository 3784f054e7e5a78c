"""Held-out evaluation with the rollout engine: pass@1 over k samples, cons@k, pass@k, greedy accuracy
(:mod:`r1mega.eval.metrics`); ``r1mega eval`` runs it once per benchmark (:mod:`r1mega.eval.report`).

Prompts are split over the rollout engines (data parallel); each engine samples and scores its
share as training does (:mod:`r1mega.rollout.groups`: the first TP rank scores with the
configured rule rewards), and a response counts as correct by its row's own correctness reward
(:mod:`r1mega.rewards.correctness`: accuracy for math, code for rows with tests, countdown);
per-prompt results are gathered so every rank returns the same metrics. ``reward`` is the held-out
training reward: ``reward.weights``' weighted sum of the rule rewards, as training scores it (a
reward model's score is not in it: the engine ranks hold no reward model), with each weighted
rule reward's own mean as ``reward/<name>``. A response whose reward
failed (a sandbox that could not start, a scorer timeout) is not correct and is counted in
``scoring_errors``: the report flags such a number instead of passing it off as the model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from r1mega.config import Config
from r1mega.eval.metrics import PromptResult, summarize

if TYPE_CHECKING:
    from r1mega.data.prompts import PromptRecord
    from r1mega.rollout.engine import RolloutEngine


def _pred(sample) -> str | None:
    info = sample.metadata.get("reward_info", {}).get("accuracy", {})
    return info.get("pred") if isinstance(info, dict) else None


def _reward_parts(sample, names) -> dict[str, float]:
    """The sample's score of each rule reward in ``names`` (its breakdown's numbers)."""
    b = sample.reward_breakdown
    return {k: float(b[k]) for k in names if isinstance(b.get(k), (int, float)) and not isinstance(b.get(k), bool)}


def _unscored(sample) -> bool:
    """The sample's reward failed or timed out (r1mega.rewards.scorer's breakdown flags)."""
    b = sample.reward_breakdown
    return bool(b.get("error") or b.get("timeout"))


def _correct(sample) -> bool:
    from r1mega.rewards.correctness import is_correct

    return is_correct(sample)


def evaluate_engine(engine: RolloutEngine, records: list[PromptRecord], cfg: Config,
                    prefix: str = "eval/") -> dict[str, float]:
    """Metrics of the engine's current policy on ``records`` (keys prefixed with ``prefix``)."""
    from r1mega.rollout.groups import gather_groups, sample_groups, score_groups

    e = cfg.eval
    records = records[: e.max_prompts] if e.max_prompts else records
    lo = len(records) * engine.dp_rank // engine.dp_size
    hi = len(records) * (engine.dp_rank + 1) // engine.dp_size
    mine = records[lo:hi]
    results: list[PromptResult] = []
    if mine:
        v = engine.policy_version
        sampled = sample_groups(engine, mine, e.k, expected_version=v, temperature=e.temperature, top_p=e.top_p)
        greedy = sample_groups(engine, mine, 1, expected_version=v, temperature=0.0, top_p=1.0) if e.greedy else []
        # each row is judged by its own correctness reward (r1mega.rewards.correctness), scored
        # even where reward.weights leaves it out (at weight 0)
        from dataclasses import replace

        from r1mega.rewards.correctness import with_correctness_rewards
        reward_cfg = replace(cfg.reward, weights=with_correctness_rewards(cfg.reward.weights,
                                                                          [r.metadata for r in mine]))
        score_groups(engine, sampled + greedy, reward_cfg)
        weighted = [k for k, w in cfg.reward.weights.items() if w]  # the training reward's parts
        if engine.tp_rank == 0:  # the scored copy
            for i, rec in enumerate(mine):
                group = [s for s in sampled if s.group_id == i]
                g = [s for s in greedy if s.group_id == i]
                results.append(PromptResult(
                    correct=[_correct(s) for s in group], answers=[_pred(s) for s in group], reference=rec.answer,
                    response_lens=[len(s.response_ids) for s in group],
                    greedy_correct=_correct(g[0]) if g else None,
                    scoring_errors=sum(map(_unscored, group + g)),
                    rewards=[float(s.reward) for s in group],
                    reward_parts=[_reward_parts(s, weighted) for s in group]))
    results = gather_groups(engine, results)
    if not results:
        return {}
    return {prefix + k: float(v) for k, v in summarize(results).items()}
