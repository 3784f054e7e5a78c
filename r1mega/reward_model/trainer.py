"""Bradley-Terry training of a :class:`~r1mega.reward_model.model.RewardModel` with Megatron's
DDP and optimizer, set up by :func:`r1mega.trainer.optim.build_optimizer` as for the policy.

Loss scaling: the loss of one micro-batch is ``sum over its pairs of -log sigmoid(margin)`` over
the *global* number of pairs of the step (all micro-batches, all data-parallel ranks), so the sum
over everything is the mean loss. Megatron divides each micro-batch loss by the number of
micro-batches and DDP averages gradients over data-parallel ranks; both factors are multiplied
back in. The value head is a parameter of the last stage's chunk, so DDP reduces its gradient over
data-parallel ranks with the trunk's; over TP its gradient is identical on every rank (replicated
input) and the optimizer counts it once in the gradient norm (Megatron's TP-duplicate rule).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from r1mega.config import Config
from r1mega.parallel import watchdog
from r1mega.reward_model.loss import bradley_terry_loss, pair_metrics, pair_sums
from r1mega.reward_model.model import RewardModel, run_schedule, schedule_batches

_SUM_KEYS = ("pairs", "loss", "correct", "margin", "score", "score_sq")


def _reduce(sums: dict[str, float], layout) -> dict[str, float]:
    """Sums from the last stage of every data-parallel rank (TP peers hold equal copies: count once)."""
    vec = torch.tensor([sums.get(k, 0.0) for k in _SUM_KEYS], dtype=torch.float64) / layout.tensor
    dist.all_reduce(vec)
    return dict(zip(_SUM_KEYS, vec.tolist()))


def _add(acc: dict[str, float], part: dict[str, float]) -> None:
    for k, v in part.items():
        acc[k] = acc.get(k, 0.0) + v


class RewardTrainer:
    """This rank's shard of the reward model wrapped in Megatron DDP, with its optimizer and LR
    schedule (``cfg.optimizer``; ``cfg.parallel.distributed_optimizer``; ``cfg.trainer.micro_batch_tokens``)."""

    def __init__(self, cfg: Config, model: RewardModel, total_steps: int = 1):
        from megatron.core import parallel_state as ps

        from r1mega.trainer.optim import build_optimizer

        self.cfg, self.model, self.layout = cfg, model, model.layout
        self.dp_rank = ps.get_data_parallel_rank()  # read once; the sizes come from the layout
        self.optim = build_optimizer(cfg, model.chunks, total_steps)
        self.chunks, self.optimizer, self.scheduler = self.optim.chunks, self.optim.optimizer, self.optim.scheduler

    def train_step(self, pairs: list, global_pairs: int) -> dict[str, float]:
        """One optimizer step on ``pairs`` (this data-parallel rank's share of ``global_pairs``).
        Returns the global loss, pairwise accuracy, margin, reward mean/std, grad norm and lr; a
        step with a non-finite gradient on any rank is skipped (``skipped`` = 1)."""
        from r1mega.reward_model.batch import pair_batches

        if not pairs:
            raise ValueError("train_step needs at least one pair on every data-parallel rank")
        mbs = schedule_batches(pair_batches(pairs, self.cfg.trainer.micro_batch_tokens), self.layout)
        scale = len(mbs) * self.layout.data  # undo Megatron's 1/num_microbatches and DDP's 1/dp
        sums: dict[str, float] = {}

        def on_rewards(mb, rewards):
            rc, rr = rewards[:mb.pairs], rewards[mb.pairs:2 * mb.pairs]
            _add(sums, pair_sums(rc, rr))
            return bradley_terry_loss(rc, rr).sum() / global_pairs * scale

        self.optim.zero_grad()
        run_schedule(self.chunks, mbs, self.layout, on_rewards, forward_only=False)
        applied, grad_norm = self.optim.step()  # the value head is one of the chunks' parameters
        stats = pair_metrics(_reduce(sums, self.layout))
        stats.update(grad_norm=grad_norm, lr=self.optim.lr, skipped=0.0 if applied else 1.0)
        return stats


@torch.no_grad()
def evaluate_pairs(model: RewardModel, pairs: list, token_budget: int) -> dict[str, float]:
    """Pairwise accuracy, loss, margin and reward mean/std over ``pairs`` (collective over the world:
    every rank passes the same list; data-parallel rank d scores pairs d, d + dp, ...)."""
    from megatron.core import parallel_state as ps

    from r1mega.reward_model.batch import pair_batches

    dp, d = model.layout.data, ps.get_data_parallel_rank()
    mine = list(pairs[d::dp])
    sums: dict[str, float] = {}
    if mine:
        def on_rewards(mb, rewards):
            _add(sums, pair_sums(rewards[:mb.pairs], rewards[mb.pairs:2 * mb.pairs]))
            return rewards.new_zeros(())

        was = [c.training for c in model.chunks]
        for c in model.chunks:
            c.eval()
        try:
            run_schedule(model.chunks, pair_batches(mine, token_budget), model.layout, on_rewards, forward_only=True)
        finally:
            for c, t in zip(model.chunks, was):
                c.train(t)
    return pair_metrics(_reduce(sums, model.layout))


def fit(trainer: RewardTrainer, train_pairs: list, *, steps: int, batch: int, eval_pairs: list | None = None,
        eval_every: int = 0, seed: int = 0, on_step=None, start_step: int = 0) -> dict[str, float]:
    """Train ``steps`` optimizer steps of ``batch`` pairs each (global; reshuffled every epoch,
    deterministic in ``seed``), evaluating on ``eval_pairs`` before, every ``eval_every`` steps and
    at the end. ``on_step(step, metrics)`` gets ``train/*`` and ``eval/*`` metrics (step 0: the
    evaluation before training); a true return value after a training step stops there (it must be
    the same on every rank: preemption, see r1mega.trainer.preemption), with ``summary["stopped_at"]``
    set and no final evaluation. ``start_step`` > 0 continues a resumed run: steps up to it are
    skipped (each step's pairs do not depend on resuming) and so is the evaluation before training.
    Returns a summary: first/last training metrics of this call, eval before (fresh runs)/after."""
    from r1mega.trainer.sft import batches

    layout = trainer.layout
    dp, d = layout.data, trainer.dp_rank
    if batch < 1 or batch % dp:
        raise ValueError(f"--batch ({batch}) must be a positive multiple of the data-parallel size ({dp})")
    if not train_pairs:
        raise ValueError("no training pairs")
    budget = trainer.cfg.trainer.micro_batch_tokens
    summary: dict[str, float] = {}

    def evaluate(step: int) -> dict[str, float]:
        watchdog.report("eval", step)
        m = {f"eval/{k}": v for k, v in evaluate_pairs(trainer.model, eval_pairs, budget).items()}
        if on_step is not None:
            on_step(step, m)
        return m

    if eval_pairs and start_step == 0:
        summary.update({f"{k}_before": v for k, v in evaluate(0).items()})
    for step, idx in enumerate(batches(len(train_pairs), batch, steps, seed), start=1):
        if step <= start_step:
            continue
        watchdog.report("train", step)
        share = idx[d * batch // dp:(d + 1) * batch // dp]
        stats = {f"train/{k}": v for k, v in trainer.train_step([train_pairs[i] for i in share], batch).items()}
        if step == start_step + 1:
            summary.update({f"{k}_first": v for k, v in stats.items()})
        summary.update({f"{k}_last": v for k, v in stats.items()})
        if on_step is not None and on_step(step, stats):
            summary["stopped_at"] = step
            return summary
        if eval_pairs and eval_every and step % eval_every == 0 and step < steps:
            evaluate(step)
    if eval_pairs:
        summary.update({f"{k}_after": v for k, v in evaluate(steps).items()})
    return summary


def calibrate(model: RewardModel, pairs: list, token_budget: int, limit: int = 1024) -> dict[str, float]:
    """Record the reward mean/std over the responses of (up to ``limit``) ``pairs`` in the model's
    metadata (the scorer's ``normalize``); collective like :func:`evaluate_pairs`."""
    m = evaluate_pairs(model, pairs[:limit], token_budget)
    model.meta.score_mean = float(m["score_mean"])
    model.meta.score_std = float(m["score_std"]) if m["score_std"] > 0 else 1.0
    return m
