"""Supervised fine-tuning on the same Megatron policy, layouts, kernels, checkpoints and metrics as RL.

Used for cold-start SFT, rejection-sampling SFT, distillation, and the tiny default's base-model
pretraining (documents as responses to a one-token prompt). Loss: the negative log-likelihood of
the loss-carrying response tokens summed over the global batch and divided by their count
(prompt tokens, and user turns of a chat, carry no loss):

    L = - sum_{i, t : mask_it = 1} log p(y_it | x_i, y_i<t) / sum_{i, t} mask_it

Micro-batches are length-sorted padded rows, or packed rows with attention confined to each
sample (``trainer.packing``); both give the same loss and gradients.

    train_sft(cfg)                     the ``r1mega sft`` command: data, resume, steps, eval, export
    run_sft(cfg, examples, steps=...)  the optimizer steps over in-memory examples
"""

from __future__ import annotations

import logging
import math
import os
import random
import time

import torch

from r1mega.config import Config
from r1mega.data.sft import sft_example
from r1mega.parallel import watchdog
from r1mega.trainer.samples import loss_tokens
from r1mega.types import Sample

log = logging.getLogger("r1mega.sft")


def example(prompt_ids: list[int], response_ids: list[int], response_mask: list[int] | None = None) -> Sample:
    """An SFT example: loss on ``response_ids`` only (where ``response_mask`` is 1, if given)."""
    return sft_example(prompt_ids, response_ids, response_mask)


def batches(n_examples: int, per_step: int, steps: int, seed: int, start: int = 0):
    """Global example indices for steps ``start .. steps-1``: a seeded reshuffle every epoch, so
    step ``s`` gets the same examples whether or not the run was resumed before it."""
    order: list[int] = []
    epoch = 0
    for step in range(steps):
        while len(order) < per_step:
            perm = list(range(n_examples))
            random.Random(f"r1mega-sft:{seed}:{epoch}").shuffle(perm)
            order += perm
            epoch += 1
        if step >= start:
            yield order[:per_step]
        order = order[per_step:]


def _dp(policy) -> tuple[int, int]:
    """(data-parallel size, this rank's data-parallel rank) of ``policy``."""
    return policy.layout.data, policy.dp_rank


def sft_step(policy, examples: list[Sample], idx: list[int], pad_id: int) -> dict[str, float]:
    """One optimizer step on the global examples ``idx`` (this rank trains its data-parallel share)."""
    dp, dp_rank = _dp(policy)
    share = idx[dp_rank * len(idx) // dp:(dp_rank + 1) * len(idx) // dp]
    mine = [examples[i] for i in share]
    mbs = policy.pack(mine, pad_id=pad_id)
    den = float(max(1, sum(loss_tokens(examples[i]) for i in idx)))
    return policy.sft_step(mbs, den)


def eval_loss(policy, examples: list[Sample], pad_id: int, *, confident: float = 0.5) -> dict[str, float]:
    """Held-out metrics of ``examples`` under the current weights (collective):

    ``sft/eval_loss``   mean response NLL per loss token
    ``sft/eval_exact``  share of examples whose every loss token has probability > ``confident``.
                        At 0.5 each such token is the argmax, so this is a lower bound on the
                        teacher-forced greedy exact match (how often greedy decoding reproduces the
                        loss tokens when it is fed the right prefix).
    """
    dp, dp_rank = _dp(policy)
    mine = examples[dp_rank::dp]
    acc = {"loss": 0.0, "tokens": 0.0, "exact": 0.0, "examples": 0.0}
    if mine:
        floor = math.log(confident)
        mbs = policy.pack(mine, pad_id=pad_id)
        policy.logprobs(mbs, "old", temperature=1.0)
        for mb in mbs:
            if mb.old_logp is None:  # not the last pipeline stage
                continue
            acc["loss"] -= float((mb.old_logp * mb.mask).sum())
            acc["tokens"] += float(mb.mask.sum())
            missed = ((mb.old_logp <= floor) & (mb.mask > 0)).double()  # (N,)
            per_example = torch.zeros(len(mine), dtype=torch.float64, device=missed.device).index_add_(
                0, mb.seq_ids, missed)
            acc["exact"] += float((per_example[mb.sample_ids] == 0).sum())
            acc["examples"] += len(mb.sample_ids)
    st = policy.sum_over_ranks(acc)
    return {"sft/eval_loss": st["loss"] / max(st["tokens"], 1.0), "sft/eval_tokens": st["tokens"],
            "sft/eval_exact": st["exact"] / max(st["examples"], 1.0)}


def build_policy(cfg: Config, steps: int):
    """This rank's Policy for ``cfg.model.hf_path`` at the layout of ``cfg.parallel``."""
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy

    arch = read_hf_config(cfg.model.hf_path)
    layout = init_parallel(cfg.parallel, arch, seed=cfg.run.seed, run=cfg.run)
    chunks, arch = load_hf(cfg.model.hf_path, cfg.model, layout)
    return Policy(cfg, layout, arch, chunks, total_optimizer_steps=steps)


def run_sft(cfg: Config, examples: list[Sample], *, steps: int, examples_per_step: int, policy=None,
            on_step=None, pad_id: int = 0, start_step: int = 0):
    """Train optimizer steps ``start_step .. steps-1``; returns the Policy (``modules`` export to HF).

    ``policy``: continue an existing Policy; otherwise the model is loaded from
    ``cfg.model.hf_path`` at the parallel layout of ``cfg.parallel``. ``on_step(step, stats)``
    is called after each step (progress, logging, checkpoints); a true return value ends
    training after that step (it must be the same on every rank, e.g. from a collective metric).
    """
    if not examples:
        raise ValueError("SFT needs at least one example")
    policy = policy or build_policy(cfg, steps)
    dp, _ = _dp(policy)
    if examples_per_step % dp:
        raise ValueError(f"examples per step ({examples_per_step}) must be a multiple of the data-parallel size ({dp})")
    for step, idx in enumerate(batches(len(examples), examples_per_step, steps, cfg.run.seed, start_step),
                               start=start_step):
        watchdog.report("train", step + 1)
        stats = sft_step(policy, examples, idx, pad_id)
        if on_step is not None and on_step(step + 1, stats):
            break
    return policy


def train_sft(cfg: Config, *, data: str | None = None) -> dict:
    """The ``r1mega sft`` command: ``run.steps`` steps on ``sft.train`` (or ``data``), resuming from
    the newest checkpoint under ``run_dir/checkpoints`` (``run.resume``), logging metrics and the
    held-out loss, checkpointing every ``run.save_every`` steps and exporting HF to ``run_dir/hf``."""
    import torch.distributed as dist

    from r1mega.checkpoint import load_checkpoint, prepare_resume, save_checkpoint
    from r1mega.config import ConfigError, to_dict
    from r1mega.data.sft import load_sft_examples
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.logging.metrics import MetricsLogger
    from r1mega.logging.progress import StepProgress, console_summary
    from r1mega.models import export_hf
    from r1mega.parallel.init import init_distributed

    s, rc = cfg.sft, cfg.run
    source = data or s.train
    if not cfg.model.hf_path:
        raise ConfigError("model.hf_path is required for SFT: the Hugging Face model directory to fine-tune")
    if not source:
        raise ConfigError("sft.train is not set: the SFT examples (.jsonl/.parquet or a `datasets` name)")
    # bad data, a bad checkpoint or checkpoint directory, a refused change: errors before the model loads
    init_distributed(rc)  # resolve_resume verifies on rank 0 and broadcasts its choice
    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.hf_path)
    max_len = s.max_len or cfg.model.max_seq_len
    examples, data_stats = load_sft_examples(source, tok, s, max_len=max_len)
    held_out = load_sft_examples(s.eval, tok, s, max_len=max_len)[0] if s.eval else None
    run_dir = os.path.join(rc.output_dir, rc.name)
    ckpt_root = os.path.join(run_dir, "checkpoints")
    start = 0
    path, changes = prepare_resume(ckpt_root, rc.resume, to_dict(cfg))
    policy = build_policy(cfg, rc.steps)
    cfg.validate(world_size=policy.layout.world_size)
    rank = dist.get_rank()
    if rank == 0:
        log.info("SFT data %s: %s", source, data_stats.as_dict())
    if path is not None:
        for line in changes:
            if rank == 0:
                log.info(line)
        extra = load_checkpoint(path, chunks=policy.modules, optimizer=policy.optimizer, scheduler=policy.scheduler)
        start = int(extra["step"])
        if rank == 0:
            log.info("resumed SFT from %s at step %d", path, start)
    logger = MetricsLogger(run_dir, tensorboard=rc.tensorboard, wandb_project=rc.wandb_project,
                           config_dict=to_dict(cfg), rank=rank, resume_step=start if path else None)
    progress = StepProgress(rc.steps, initial=start, rank=rank, desc="sft")

    def save(step: int) -> None:
        save_checkpoint(ckpt_root, step, chunks=policy.modules, optimizer=policy.optimizer,
                        scheduler=policy.scheduler, extra={"step": step, "config": to_dict(cfg)},
                        keep_last=rc.keep_last)

    from r1mega.trainer.preemption import SaveSchedule, StopSignals

    last: dict = {}
    t_last = time.perf_counter()
    stopped_by: str | None = None
    signals = StopSignals()
    schedule = SaveSchedule(signals, rc.steps, rc.save_every, rc.save_every_minutes)

    def on_step(step: int, stats: dict) -> bool:
        nonlocal last, t_last, stopped_by
        now = time.perf_counter()
        metrics = {f"sft/{k}": v for k, v in stats.items()}
        metrics["perf/tokens_per_s"] = stats["tokens"] / max(now - t_last, 1e-9)
        t_last = now
        if held_out and s.eval_every and step % s.eval_every == 0 and step < rc.steps:
            watchdog.report("eval")
            metrics.update(eval_loss(policy, held_out, tok.pad_id))
        logger.log(step, metrics)  # before the checkpoint (see r1mega.trainer.loop.train)
        do_save, stop = schedule.after_step(step)
        if do_save:
            watchdog.report("checkpoint")
            save(step)
            schedule.saved()
        progress.update(step, {"loss": stats["loss"]})
        if rank == 0 and rc.log_every and step % rc.log_every == 0:
            console_summary(step, metrics)
        last = metrics
        if stop:
            stopped_by = schedule.announce_stop(step)
        return stopped_by is not None

    try:
        with signals:
            run_sft(cfg, examples, steps=rc.steps, examples_per_step=s.examples_per_step, policy=policy,
                    on_step=on_step, pad_id=tok.pad_id, start_step=start)
        if stopped_by is not None:
            return {**last, "preempted": stopped_by, "data": data_stats.as_dict(), "policy": policy}
        if held_out:
            final = eval_loss(policy, held_out, tok.pad_id)
            logger.log(rc.steps, final)
            last.update(final)
        if start < rc.steps or path is None:
            save(rc.steps)
    finally:
        progress.close()
        logger.close()
    hf_dir = os.path.join(run_dir, "hf")
    if rc.export_hf:
        export_hf(policy.modules, policy.arch, hf_dir,
                  tokenizer_dir=None if cfg.model.tokenizer_path else cfg.model.hf_path)
    return {**last, "hf_dir": hf_dir, "data": data_stats.as_dict(), "policy": policy}
