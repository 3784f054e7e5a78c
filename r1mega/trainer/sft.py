"""Supervised fine-tuning on the same Megatron policy, layouts and kernels as RL.

Used for cold-start SFT, distillation, rejection-sampling SFT, and the tiny default's
base-model pretraining (documents as responses to a one-token prompt). Loss: mean negative
log-likelihood of the response tokens over the global batch (prompt tokens carry no loss).
"""

from __future__ import annotations

import logging
import random

from r1mega.config import Config
from r1mega.trainer.batch import pack
from r1mega.types import Sample

log = logging.getLogger("r1mega.sft")


def example(prompt_ids: list[int], response_ids: list[int]) -> Sample:
    """An SFT example: loss on ``response_ids`` only."""
    return Sample(prompt_ids=list(prompt_ids), response_ids=list(response_ids), group_id=0)


def batches(n_examples: int, per_step: int, steps: int, seed: int):
    """Global example indices per step: seeded reshuffle every epoch, deterministic."""
    order: list[int] = []
    epoch = 0
    for _ in range(steps):
        if len(order) < per_step:
            perm = list(range(n_examples))
            random.Random(f"r1mega-sft:{seed}:{epoch}").shuffle(perm)
            order += perm
            epoch += 1
        yield order[:per_step]
        order = order[per_step:]


def run_sft(cfg: Config, examples: list[Sample], *, steps: int, examples_per_step: int, policy=None,
            on_step=None, pad_id: int = 0):
    """Train ``steps`` optimizer steps; returns the Policy (its ``modules`` export to HF).

    ``policy``: continue an existing Policy; otherwise the model is loaded from
    ``cfg.model.hf_path`` at the parallel layout of ``cfg.parallel``. ``on_step(step, stats)``
    is called after each step (progress, logging).
    """
    from megatron.core import parallel_state as ps

    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy

    if not examples:
        raise ValueError("SFT needs at least one example")
    if policy is None:
        arch = read_hf_config(cfg.model.hf_path)
        layout = init_parallel(cfg.parallel, arch, seed=cfg.run.seed)
        chunks, arch = load_hf(cfg.model.hf_path, cfg.model, layout)
        policy = Policy(cfg, layout, arch, chunks, total_optimizer_steps=steps)
    dp, dp_rank = policy.layout.data, ps.get_data_parallel_rank()
    if examples_per_step % dp:
        raise ValueError(f"examples per step ({examples_per_step}) must be a multiple of the data-parallel size ({dp})")
    for step, idx in enumerate(batches(len(examples), examples_per_step, steps, cfg.run.seed)):
        share = idx[dp_rank * len(idx) // dp:(dp_rank + 1) * len(idx) // dp]
        mbs = pack([examples[i] for i in share], cfg.trainer.micro_batch_tokens, pad_id=pad_id)
        den = float(max(1, sum(len(examples[i].response_ids) for i in idx)))
        stats = policy.sft_step(mbs, den)
        if on_step is not None:
            on_step(step + 1, stats)
    return policy
