"""``r1mega train-rm``: train a Bradley-Terry reward model on preference pairs.

    r1mega train-rm CONFIG --pairs FILE [--eval-pairs FILE] [--steps N] [--batch N] [key=value ...]
    torchrun --nproc-per-node N -m r1mega.reward_model CONFIG --pairs FILE ...   (before it is wired)

Config sections used: ``model`` (``hf_path``: the HF causal-LM directory the trunk starts from;
``tokenizer_path``, ``dtype``, ``max_seq_len``), ``parallel``, ``optimizer``, ``trainer.micro_batch_tokens``,
``run`` (``steps`` unless ``--steps``, ``seed``, ``output_dir``/``name``, ``eval_every``,
``save_every``, ``save_every_minutes``, ``keep_last``, ``resume``, ``tensorboard``, ``wandb_project``).
SIGTERM or SIGUSR1 saves a checkpoint after the step in flight and stops (``"preempted"`` in the
summary), as in ``r1mega train``. Writes
``RUN_DIR/reward_model`` (see :func:`r1mega.reward_model.save_reward_model`),
``RUN_DIR/reward_model_logs`` (metrics.jsonl, summary.json) and training checkpoints (trunk, value
head, optimizer, LR schedule, RNG) under ``RUN_DIR/reward_model_checkpoints`` every
``run.save_every`` steps and at the end; ``run.resume=auto`` (the default) continues from the
newest one. RUN_DIR = ``run.output_dir/run.name``.
"""

from __future__ import annotations

import json
import logging
import os

from r1mega.config.base import ConfigError

log = logging.getLogger("r1mega.rm")


def train_rm(cfg, pairs: str, *, eval_pairs: str | None = None, steps: int | None = None, batch: int = 32,
             split: str = "train", prompt_key: str | None = "prompt", chosen_key: str = "chosen",
             rejected_key: str = "rejected") -> dict:
    """Load the pairs, train, evaluate, calibrate, export. Collective (every rank). Returns the summary."""
    import torch.distributed as dist

    from r1mega.checkpoint import load_checkpoint, prepare_resume, save_checkpoint
    from r1mega.config import to_dict
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.logging.metrics import MetricsLogger
    from r1mega.logging.progress import StepProgress
    from r1mega.models import read_hf_config
    from r1mega.parallel import watchdog
    from r1mega.parallel.init import init_parallel
    from r1mega.reward_model.data import load_pairs
    from r1mega.reward_model.model import build_reward_model, save_reward_model
    from r1mega.reward_model.trainer import RewardTrainer, calibrate, fit
    from r1mega.trainer.preemption import SaveSchedule, StopSignals

    if not cfg.model.hf_path:
        raise ConfigError("model.hf_path is required: the Hugging Face causal-LM directory the reward model's "
                          "trunk starts from")
    steps = cfg.run.steps if steps is None else steps
    if steps < 1:
        raise ConfigError(f"--steps / run.steps ({steps}) must be >= 1 for train-rm")
    arch = read_hf_config(cfg.model.hf_path)
    tok = load_tokenizer(cfg.model.tokenizer_path or cfg.model.hf_path)
    keys = dict(split=split, prompt_key=prompt_key, chosen_key=chosen_key, rejected_key=rejected_key,
                max_len=cfg.model.max_seq_len)
    train = load_pairs(pairs, tok, **keys)  # bad data fails before the process groups and the model
    held_out = load_pairs(eval_pairs, tok, **keys) if eval_pairs else None
    layout = init_parallel(cfg.parallel, arch, seed=cfg.run.seed, run=cfg.run)
    run_dir = os.path.join(cfg.run.output_dir, cfg.run.name)
    logs = os.path.join(run_dir, "reward_model_logs")
    ckpt_root = os.path.join(run_dir, "reward_model_checkpoints")
    # a bad checkpoint, checkpoint directory or config change fails before the model is built
    resumed, changes = prepare_resume(ckpt_root, cfg.run.resume, to_dict(cfg))

    rm = build_reward_model(cfg.model.hf_path, layout, cfg.model, seed=cfg.run.seed)
    rm.meta.eos_id = tok.eos_id
    trainer = RewardTrainer(cfg, rm, total_steps=steps)
    rank = dist.get_rank()
    start = 0
    if resumed is not None:
        for line in changes:
            if rank == 0:
                log.info(line)
        extra = load_checkpoint(resumed, chunks=trainer.chunks, optimizer=trainer.optimizer,
                                scheduler=trainer.scheduler)
        start = int(extra["step"])
        if start > steps:
            raise ConfigError(f"checkpoint {resumed!r} is at step {start}, past --steps / run.steps ({steps}); "
                              f"raise the steps or set run.resume=never")
    logger = MetricsLogger(logs, tensorboard=cfg.run.tensorboard, wandb_project=cfg.run.wandb_project,
                           config_dict=to_dict(cfg), rank=rank, run_name=f"{cfg.run.name}-rm",
                           resume_step=start if resumed else None)
    bar = StepProgress(steps, initial=start, rank=rank, desc="train-rm")

    def save(step: int) -> None:
        watchdog.report("checkpoint", step)
        save_checkpoint(ckpt_root, step, chunks=trainer.chunks, optimizer=trainer.optimizer,
                        scheduler=trainer.scheduler, extra={"step": step, "config": to_dict(cfg)},
                        keep_last=cfg.run.keep_last)

    signals = StopSignals()
    schedule = SaveSchedule(signals, steps, cfg.run.save_every, cfg.run.save_every_minutes)
    stopped_by: str | None = None

    def on_step(step: int, metrics: dict) -> bool:
        nonlocal stopped_by
        logger.log(step, metrics)  # before the checkpoint, as in the RL loop
        if "train/loss" not in metrics:
            return False
        bar.update(step, {"loss": metrics["train/loss"], "acc/mean": metrics["train/accuracy"]})
        do_save, stop = schedule.after_step(step)
        if do_save:
            save(step)
            schedule.saved()
        if stop:
            stopped_by = schedule.announce_stop(step)
        return stop

    try:
        with signals:
            summary = fit(trainer, train, steps=steps, batch=batch, eval_pairs=held_out,
                          eval_every=cfg.run.eval_every, seed=cfg.run.seed, on_step=on_step, start_step=start)
        if stopped_by is not None:
            summary["preempted"] = stopped_by
            return summary
        if start < steps or resumed is None:
            save(steps)
    finally:
        bar.close()
        logger.close()
    cal = calibrate(rm, train, cfg.trainer.micro_batch_tokens)
    rm.meta.steps = steps
    rm.meta.eval_accuracy = summary.get("eval/accuracy_after")
    out = os.path.join(run_dir, "reward_model")
    # A separate tokenizer (model.tokenizer_path) stays out of the model directory (see trainer/loop.py).
    save_reward_model(rm, out, tokenizer_dir=None if cfg.model.tokenizer_path else cfg.model.hf_path)
    summary.update({"score_mean": cal["score_mean"], "score_std": cal["score_std"], "reward_model": out,
                    "train_pairs": len(train), "eval_pairs": len(held_out) if held_out else 0})
    if rank == 0:
        with open(os.path.join(logs, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def cmd_train_rm(args) -> int:
    """The ``train-rm`` command function (``args`` from :func:`add_parser`'s subparser)."""
    from r1mega.config import load_config

    cfg = load_config(args.config, args.overrides)
    summary = train_rm(cfg, args.pairs, eval_pairs=args.eval_pairs, steps=args.steps, batch=args.batch,
                       split=args.split, prompt_key=args.prompt_key or None, chosen_key=args.chosen_key,
                       rejected_key=args.rejected_key)
    if int(os.environ.get("RANK", "0")) == 0:
        keys = ("eval/accuracy_before", "eval/accuracy_after", "train/loss_first", "train/loss_last",
                "train/accuracy_last", "reward_model", "preempted", "stopped_at")
        print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    return 0


def add_parser(sub) -> None:
    """Register ``train-rm`` on argparse subparsers ``sub``."""
    t = sub.add_parser("train-rm", help="train a Bradley-Terry reward model on preference pairs")
    t.add_argument("config", help="YAML config (model, parallel, optimizer, trainer, run sections)")
    t.add_argument("--pairs", required=True, help="preference pairs: .jsonl/.json/.parquet or a `datasets` name")
    t.add_argument("--eval-pairs", default=None, help="held-out pairs (pairwise accuracy before/after)")
    t.add_argument("--steps", type=int, default=None, help="optimizer steps (default run.steps)")
    t.add_argument("--batch", type=int, default=32, help="pairs per optimizer step (global)")
    t.add_argument("--split", default="train", help="split to read when --pairs is a `datasets` name")
    t.add_argument("--prompt-key", default="prompt", help="prompt field ('' : chosen/rejected hold the whole text)")
    t.add_argument("--chosen-key", default="chosen")
    t.add_argument("--rejected-key", default="rejected")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    t.set_defaults(fn=cmd_train_rm)
