"""The R1-Zero / GRPO training loop.

    prompts -> rollout -> rewards -> advantages -> pack -> logprobs -> train -> sync -> log/ckpt

:func:`rl_step` is that line, one call per stage; :func:`train` runs it ``run.steps`` times
under torchrun (every rank runs the same code: SPMD). What each stage needs is built once by
:func:`setup` into an :class:`RLRun`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from r1mega.config import Config
from r1mega.parallel import watchdog
from r1mega.rollout.groups import gather_groups, make_engine, partial_rollout_groups, rollout_groups, score_groups
from r1mega.trainer.samples import denominator, mask_stale_tokens, prepare, rollout_metrics, shard, staleness

if TYPE_CHECKING:
    from r1mega.data.prompts import PromptRecord
    from r1mega.data.sampler import PromptSampler
    from r1mega.data.tokenizer import Tokenizer
    from r1mega.logging.metrics import MetricsLogger
    from r1mega.logging.timers import StepTimer
    from r1mega.models.arch import ModelArch
    from r1mega.parallel.layout import Layout
    from r1mega.reward_model import RewardModelScorer
    from r1mega.rollout.engine import RolloutEngine
    from r1mega.rollout.async_rollout import Link
    from r1mega.rollout.partial import PartialBuffer
    from r1mega.trainer.policy import Policy
    from r1mega.types import Sample

log = logging.getLogger("r1mega.train")


@dataclass
class RLRun:
    """Everything one rank needs to run RL steps."""

    cfg: Config
    layout: Layout
    arch: ModelArch
    policy: Policy
    engine: RolloutEngine | None  # None on the trainer ranks of async RL
    tokenizer: Tokenizer
    records: list[PromptRecord]
    eval_records: list[PromptRecord] | None
    sampler: PromptSampler
    logger: MetricsLogger | None  # set by setup once the resume step is known
    timer: StepTimer
    run_dir: str
    reward_model: RewardModelScorer | None = None
    partial: PartialBuffer | None = None
    """``rollout.mode=partial``: this engine's groups in flight (checkpointed with the run)."""
    link: Link | None = None
    """``rollout.mode=async``: the channels to the rollout ranks (this trainer rank holds no engine)."""
    restored: dict | None = None
    """Async, on resume: the checkpoint's finished batches, to be queued again."""
    version: int = 0
    step: int = 0
    bad_steps: int = 0

    @property
    def rank(self) -> int:
        return torch.distributed.get_rank()


@dataclass
class RLResult:
    """What :func:`train` returns: the finished run (its engine stays up and synced to the final
    policy; the caller shuts it down) and the last step's metrics (with the final evaluation)."""

    run: RLRun | None
    """None on a rollout rank of async RL (see ``rollout_engine``)."""
    metrics: dict[str, float]
    preempted: str | None = None
    """The signal (SIGTERM / SIGUSR1) that stopped the run early after a checkpoint, else None."""
    rollout_engine: RolloutEngine | None = None
    """Async RL, on a rollout rank: its engine, holding the final policy (left running)."""


def rl_step(run: RLRun) -> dict[str, float]:
    """One GRPO step. Returns the step's metrics (identical on every rank)."""
    cfg, t = run.cfg, run.timer
    watchdog.report(step=run.step + 1)                         # stages: the timer's sections
    t.start()
    with t("rollout"):
        prompts = next_prompts(run)                            # this engine's share of the step's prompts
        local, rollout_stats = rollout(run, prompts)           # whole responses; complete groups (partial);
                                                               # the rollout ranks' batch (async)
    with t("reward"):
        samples = score_and_gather(run, local)                 # rule rewards; every engine's groups, every rank
        score_general(run, samples)                            # reward model (general prompts)
    samples, info = prepare(samples, cfg)                      # shaping, filters, advantages
    info.update(rollout_stats, **stale_tokens(run, samples))   # partial / async: token versions
    record_rollouts(run, samples)                              # run.log_rollouts: the step's samples, jsonl
    shares = shard(samples, run.layout.data, cfg.trainer.mini_batches)
    mine = shares[run.policy.dp_rank]
    with t("logprob"):
        batches = [run.policy.pack(m, pad_id=run.tokenizer.pad_id) for m in mine]
        logprob_stats = compute_logprobs(run, [mb for b in batches for mb in b])
    with t("train"):
        train_stats = train_on(run, batches, shares)
        if cfg.trainer.old_logprob_source() == "current":  # the train forward held the old policy's logprobs
            logprob_stats = run.policy.gather_logp_stats([mb for b in batches for mb in b], run.version)
        train_stats.update(routing_stats(run, samples))       # MoE: router/engine disagreement, replay coverage
    with t("sync"):
        sync_stats = sync_weights(run)
    metrics = {**rollout_metrics(samples), **info, **logprob_stats, **train_stats, **sync_stats}
    times = t.stop()
    metrics.update(times.metrics(), **{"perf/tokens_per_s": sum(s.num_tokens for s in samples) / max(times.total, 1e-9),
                                       "policy/version": float(run.version)})
    run.step += 1
    return metrics


# ---------------------------------------------------------------------------- stages
def next_prompts(run: RLRun) -> list[PromptRecord]:
    """This rollout engine's prompts for the step (the sampler shards by rollout DP rank)."""
    from r1mega.data.prompts import batch_records
    return batch_records(run.records, run.sampler.next_batch())


def rollout(run: RLRun, prompts: list[PromptRecord]) -> tuple[list[Sample], dict[str, float]]:
    """This engine's samples for the step: ``rollout.mode=sync`` generates the prompts' whole
    responses; ``partial`` continues the buffer and returns its complete groups (with the step's
    partial-rollout metrics, summed over the engines: a collective); ``async`` takes the batch
    the rollout ranks generated (every rollout rank's share, scored)."""
    cfg, G = run.cfg, run.cfg.algorithm.group_size
    if run.link is not None:
        return async_batch(run)
    if run.partial is None:
        return rollout_groups(run.engine, prompts, G, version=run.version), {}
    local, st = partial_rollout_groups(run.engine, run.partial, prompts, G, version=run.version,
                                       chunk=cfg.rollout.partial_chunk, min_share=cfg.rollout.partial_min_groups,
                                       max_lag=cfg.rollout.partial_max_lag)
    every = gather_groups(run.engine, [st])
    return local, {"partial/rounds_max": float(max(e.rounds for e in every)),
                   **{f"partial/{k}": float(sum(getattr(e, k) for e in every))
                      for k in ("generated_tokens", "trained_groups", "in_flight_groups", "waiting_groups")}}


def async_batch(run: RLRun) -> tuple[list[Sample], dict[str, float]]:
    """Async: step n's batch from the rollout ranks (waiting while they generate it), every
    sample checked against the staleness bound (r1mega.rollout.async_rollout)."""
    n, k = run.step + 1, run.cfg.rollout.max_staleness
    samples, infos = run.link.get_batch(n)
    old = [s.policy_version for s in samples if run.version - s.policy_version > k or s.policy_version > run.version]
    if old:
        raise RuntimeError(f"step {n}: the rollout ranks sent samples of policy versions {sorted(set(old))}, but the "
                           f"trainer is at version {run.version} and rollout.max_staleness is {k}")
    if run.rank == 0 and n > 1:
        run.link.drop_batch(n - 1)  # every trainer rank has read it: its step's collectives are done
    return samples, {"async/generate_s_max": max(i["generate_s"] for i in infos),
                     "async/backpressure_s_max": max(i["wait_s"] for i in infos)}


def score_and_gather(run: RLRun, local: list[Sample]) -> list[Sample]:
    """Rule rewards on this rank's engine, then every engine's samples on every rank (async: the
    rollout ranks scored theirs, and every trainer rank already holds them all)."""
    if run.link is not None:
        return local
    score_groups(run.engine, local, run.cfg.reward, skip_kinds=("general",))
    return gather_groups(run.engine, local)


def stale_tokens(run: RLRun, samples: list[Sample]) -> dict[str, float]:
    """Partial and async rollout: the staleness of the loss tokens (policy updates between the
    version that generated a token and the one being trained); with
    ``rollout.partial_tokens=current`` the older tokens are masked out of the loss first."""
    if run.partial is None and run.link is None:
        return {}
    if run.partial is not None and run.cfg.rollout.partial_tokens == "current":
        mask_stale_tokens(samples, run.version)
    return staleness(samples, run.version)


def record_rollouts(run: RLRun, samples: list[Sample]) -> None:
    """``run.log_rollouts``: the step's samples to run_dir/rollouts (r1mega.logging.rollouts)."""
    if run.cfg.run.log_rollouts and run.rank == 0:
        from r1mega.logging.rollouts import write_rollouts
        write_rollouts(run.run_dir, run.step + 1, samples)


def score_general(run: RLRun, samples: list) -> None:
    """Reward-model rewards for the samples of kind ``general`` (a collective: every rank holds the
    same gathered samples; each data-parallel group scores a share)."""
    general = [s for s in samples if s.kind == "general"]
    if not general:
        return
    if run.reward_model is None:
        raise RuntimeError(f"{len(general)} samples of kind 'general' but no reward model: set reward.model_path "
                           f"(an r1mega train-rm output) or give every prompt a reference answer")
    from r1mega.reward_model import mix_rewards
    scores = run.reward_model.score_all([s.prompt_ids + s.response_ids for s in general])
    mix_rewards(samples, scores, run.cfg.reward.model_weight)


def routing_stats(run: RLRun, samples: list[Sample]) -> dict[str, float]:
    """MoE: the share of recorded tokens whose experts the trainer's routers chose differently
    (r1mega.models.routing_replay; a collective), and how much of each sample the engine recorded."""
    if not run.arch.is_moe:
        return {}
    from r1mega.rollout.routing_capture import coverage
    return {**run.policy.routing_stats(), **coverage(samples)}


def compute_logprobs(run: RLRun, mbs: list) -> dict[str, float]:
    """Old-policy (and reference) logprobs; reports the trainer/engine mismatch. With one update per
    batch (``trainer.old_logprobs`` current, auto's choice) the old policy is the trained one: no
    pass here, the loss uses its own logprobs and the train step reports the mismatch."""
    cfg = run.cfg
    source = cfg.trainer.old_logprob_source()
    if source == "recompute" or (source == "rollout" and cfg.rollout.parity_tokens > 0):
        run.policy.logprobs(mbs, "old")
    if run.policy.ref_chunks is not None:
        run.policy.logprobs(mbs, "ref")
    if source == "current":
        return {}
    stats = run.policy.gather_logp_stats(mbs, run.version)
    if source == "rollout":
        for mb in mbs:
            mb.old_logp = None  # the loss takes the engine's logprobs
    return stats


def train_on(run: RLRun, batches: list[list], shares: list[list[list]]) -> dict[str, float]:
    """``trainer.epochs`` passes of ``trainer.mini_batches`` optimizer steps."""
    cfg = run.cfg
    if any(not m for share in shares for m in share):
        log.warning("step %d: a data-parallel rank has an empty mini-batch (too few groups after "
                    "filtering); skipping the update", run.step)
        return {"actor/skipped": 1.0}
    max_len = cfg.rollout.max_new_tokens
    out: dict[str, float] = {}
    n = 0
    for _ in range(cfg.trainer.epochs):
        for m, mbs in enumerate(batches):
            global_mb = [s for share in shares for s in share[m]]
            den = denominator(global_mb, cfg.algorithm.loss_agg, max_len)
            stats = run.policy.train_step(mbs, den, max_len)
            for k, v in stats.items():
                out[k] = out.get(k, 0.0) + v
            n += 1
    out = {f"actor/{k}": v / n for k, v in out.items()}
    check_finite(run, out)
    return out


def check_finite(run: RLRun, stats: dict[str, float]) -> None:
    """A NaN/inf step was skipped by the policy; too many in a row stop the run."""
    import math
    bad = stats.get("actor/skipped", 0.0) > 0 or not math.isfinite(stats.get("actor/loss", 0.0))
    if not bad:
        run.bad_steps = 0
        return
    run.bad_steps += 1
    log.warning("step %d: non-finite loss or gradient; update skipped (%d in a row)", run.step, run.bad_steps)
    if run.bad_steps >= run.cfg.run.max_bad_steps:
        raise FloatingPointError(
            f"{run.bad_steps} consecutive steps with a non-finite loss or gradient (run.max_bad_steps="
            f"{run.cfg.run.max_bad_steps}); stopping. The last checkpoint under {run.run_dir}/checkpoints is "
            f"intact: lower optimizer.lr or check the data, then resume from it")


def sync_weights(run: RLRun) -> dict[str, float]:
    """Push the new policy version into the engine (see r1mega.rollout.weight_sync), or, async,
    to the rollout ranks (r1mega.rollout.async_rollout)."""
    run.version += 1
    if run.link is not None:
        from r1mega.models import iter_hf_weights
        return run.link.send_weights(iter_hf_weights(run.policy.modules, run.arch), run.version)
    run.engine.wake_up(["weights"])
    st = run.engine.sync_policy(run.policy.modules, run.arch, run.version, mode=run.cfg.rollout.sync_mode)
    return {"sync/seconds": st.seconds, "sync/bytes": float(st.total_bytes), "sync/buckets": float(st.num_buckets),
            "sync/direct": float(st.path == "direct")}


# ---------------------------------------------------------------------------- setup / run
def setup(cfg: Config, *, engine: RolloutEngine | None = None, roles=None) -> RLRun:
    """Build this rank's policy, reference, engine, data and loggers; resume if asked. ``roles``
    (async RL): this trainer rank's place in the job; it gets a link to the rollout ranks instead
    of an engine."""
    from r1mega.checkpoint import prepare_resume
    from r1mega.config import ConfigError, to_dict
    from r1mega.data.prompts import prompts_from_config
    from r1mega.data.sampler import PromptSampler
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.logging.metrics import MetricsLogger
    from r1mega.logging.timers import StepTimer
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy

    if not cfg.model.hf_path:
        raise ConfigError("model.hf_path is required for RL: the Hugging Face model directory of the starting policy")
    arch = read_hf_config(cfg.model.hf_path)
    tokenizer = load_tokenizer(cfg.model.tokenizer_path or cfg.model.hf_path)
    records = prompts_from_config(cfg.data, tokenizer)  # bad data fails before any process group or model
    eval_records = prompts_from_config(cfg.data, tokenizer, eval=True) if cfg.data.eval else None
    layout = init_parallel(cfg.parallel, arch, seed=cfg.run.seed, run=cfg.run)
    cfg.validate(world_size=layout.world_size)
    rank = torch.distributed.get_rank()
    run_dir = os.path.join(cfg.run.output_dir, cfg.run.name)
    os.makedirs(run_dir, exist_ok=True)
    # a bad checkpoint, checkpoint directory or config change fails before the model loads
    resume_from, changes = prepare_resume(os.path.join(run_dir, "checkpoints"), cfg.run.resume, to_dict(cfg))

    chunks, arch = load_hf(cfg.model.hf_path, cfg.model, layout)
    ref_chunks = None
    if cfg.algorithm.kl_coef > 0:
        ref_chunks, _ = load_hf(cfg.model.hf_path, cfg.model, layout)
        for c in ref_chunks:
            c.requires_grad_(False)
    reward_model = None
    if cfg.reward.model_path:
        from r1mega.reward_model import RewardModelScorer, load_reward_model
        rm = load_reward_model(cfg.reward.model_path, layout, dtype=cfg.model.dtype)
        reward_model = RewardModelScorer(rm, token_budget=cfg.trainer.micro_batch_tokens,
                                         normalize=cfg.reward.model_normalize)
    elif any(r.kind == "general" for r in records):
        raise ConfigError(f"data.train has prompts of kind 'general' (no reference answer) but reward.model_path "
                          f"is not set: they need a reward model (r1mega train-rm)")
    per_step = cfg.trainer.mini_batches * cfg.trainer.epochs
    policy = Policy(cfg, layout, arch, chunks, ref_chunks, total_optimizer_steps=cfg.run.steps * per_step)
    link = None
    if roles is not None:  # async: the rollout ranks hold the engines and their samplers
        from r1mega.rollout.async_rollout import Link, job_store
        link = Link(job_store(cfg.run.collective_timeout_s), roles, timeout_s=cfg.run.collective_timeout_s,
                    bucket_mb=cfg.rollout.sync_bucket_mb)
    elif engine is None:
        engine = make_engine(cfg, cfg.model.hf_path)
    # async: the trainer's sampler only keeps the prompt order's place for the checkpoints
    dp_rank, dp_size = (engine.dp_rank, engine.dp_size) if engine is not None else (0, 1)
    sampler = PromptSampler(len(records), cfg.data.prompts_per_step, dp_rank=dp_rank, dp_size=dp_size,
                            seed=cfg.run.seed, shuffle=cfg.data.shuffle)
    partial = None
    if cfg.rollout.mode == "partial":
        from r1mega.rollout.partial import PartialBuffer
        partial = PartialBuffer(group_size=cfg.algorithm.group_size, max_new_tokens=cfg.rollout.max_new_tokens)
        a = cfg.algorithm
        if rank == 0 and cfg.rollout.partial_tokens == "all" and a.rollout_is is None and a.tis_cap is None:
            log.warning("rollout.mode=partial trains tokens of older policy versions without a correction: set "
                        "algorithm.rollout_is (truncate or mask) or rollout.partial_tokens=current")
    run = RLRun(cfg=cfg, layout=layout, arch=arch, policy=policy, engine=engine, tokenizer=tokenizer,
                records=records, eval_records=eval_records, sampler=sampler, logger=None,
                timer=StepTimer(on_enter=watchdog.report),
                run_dir=run_dir, reward_model=reward_model, partial=partial, link=link)
    resumed = resume(run, resume_from, changes) if resume_from is not None else False
    run.logger = MetricsLogger(run_dir, tensorboard=cfg.run.tensorboard, wandb_project=cfg.run.wandb_project,
                               config_dict=to_dict(cfg), rank=rank, resume_step=run.step if resumed else None)
    # The engine generates with exactly the trainer's weights from the first step on.
    if link is not None:
        from r1mega.models import iter_hf_weights
        if rank == 0:
            link.restore_batches(run.restored or {})
            link.publish_start(run.step, run.version, run.restored or {})
            if run.restored:
                log.info("queued again %d finished batches from the checkpoint (steps %s)", len(run.restored),
                         ", ".join(sorted(run.restored, key=int)))
        link.send_weights(iter_hf_weights(run.policy.modules, run.arch), run.version)
        return run
    run.engine.wake_up(["weights"])
    run.engine.sync_policy(run.policy.modules, run.arch, run.version, mode=cfg.rollout.sync_mode)
    return run


def checkpoint_root(run: RLRun) -> str:
    return os.path.join(run.run_dir, "checkpoints")


def resume(run: RLRun, path: str, changes: list[str]) -> bool:
    """Load the checkpoint at ``path`` (weights, optimizer, schedule, sampler, counters); log
    ``changes`` (the config changes since it, from ``prepare_resume``)."""
    from r1mega.checkpoint import load_checkpoint

    for line in changes:
        if run.rank == 0:
            log.info(line)
    extra = load_checkpoint(path, chunks=run.policy.modules, optimizer=run.policy.optimizer,
                            scheduler=run.policy.scheduler)
    run.step, run.version = int(extra["step"]), int(extra["policy_version"])
    run.sampler.load_state_dict(extra["sampler"])
    run.bad_steps = int(extra.get("bad_steps", 0))
    load_partial(run, extra.get("partial"))
    run.restored = extra.get("async_batches") if run.link is not None else None
    if run.rank == 0:
        log.info("resumed from %s at step %d (policy version %d)", path, run.step, run.version)
    return True


def load_partial(run: RLRun, states: list[dict] | None) -> None:
    """Put the checkpoint's in-flight groups back: each engine its own buffer, or, when the number
    of engines changed, all groups dealt over the new engines in order. Nothing generated is lost
    or used twice."""
    from r1mega.rollout.partial import redistribute

    if not states:
        return
    if run.partial is None:
        n = sum(len(s["groups"]) for s in states)
        if run.rank == 0 and n:
            log.warning("the checkpoint holds %d partial-rollout groups in flight, but rollout.mode=%s: they are "
                        "dropped (resume with rollout.mode=partial to finish them)", n, run.cfg.rollout.mode)
        return
    run.partial = redistribute(states, run.engine.dp_size, group_size=run.partial.group_size,
                               max_new_tokens=run.partial.max_new_tokens)[run.engine.dp_rank]


def save(run: RLRun) -> str:
    from r1mega.checkpoint import save_checkpoint
    from r1mega.config import to_dict

    extra = {"step": run.step, "policy_version": run.version, "sampler": run.sampler.state_dict(),
             "bad_steps": run.bad_steps, "config": to_dict(run.cfg)}
    if run.partial is not None:  # every engine's buffer, on every rank: a resume may change the layout
        extra["partial"] = gather_groups(run.engine, [run.partial.state_dict()])
    if run.link is not None and run.rank == 0:  # the batches finished but not yet trained
        extra["async_batches"] = run.link.finished_batches(run.step)
    return save_checkpoint(checkpoint_root(run), run.step, chunks=run.policy.modules, optimizer=run.policy.optimizer,
                           scheduler=run.policy.scheduler, extra=extra, keep_last=run.cfg.run.keep_last)


def train(cfg: Config, *, engine: RolloutEngine | None = None) -> RLResult:
    """Run ``cfg.run.steps`` RL steps (resuming if a checkpoint exists); returns the run and the
    last metrics. ``engine``: an engine to use (else one is built); either way it is left running."""
    from r1mega.logging.progress import StepProgress, console_summary
    from r1mega.trainer.preemption import SaveSchedule, StopSignals

    roles = None
    if cfg.rollout.mode == "async":
        from r1mega.rollout.async_rollout import run_rollout_rank, split_roles
        roles = split_roles(cfg)
        if roles.is_rollout:
            return RLResult(run=None, metrics={}, rollout_engine=run_rollout_rank(cfg, roles))
    run = setup(cfg, engine=engine, roles=roles)
    rc = cfg.run
    progress = StepProgress(rc.steps, initial=run.step, rank=run.rank)
    metrics: dict[str, float] = {}
    checkpoint_s: float | None = None  # the save after the previous step, logged with this one
    preempted = None
    try:
        if run.step == 0 and run.eval_records and cfg.eval.before_train:
            run.logger.log(0, evaluate_run(run))
        with StopSignals() as signals:
            schedule = SaveSchedule(signals, rc.steps, rc.save_every, rc.save_every_minutes)
            while run.step < rc.steps:
                metrics = rl_step(run)
                if checkpoint_s is not None:
                    metrics["time/checkpoint"], checkpoint_s = checkpoint_s, None
                if rc.eval_every and run.eval_records and run.step % rc.eval_every == 0 and run.step < rc.steps:
                    metrics.update(evaluate_run(run))
                # metrics before the checkpoint: a crash in between re-runs the step (the logger drops
                # rows past the resumed step), never loses its row
                run.logger.log(run.step, metrics)
                do_save, stop = schedule.after_step(run.step)
                if do_save:
                    watchdog.report("checkpoint")
                    t0 = time.perf_counter()
                    save(run)
                    checkpoint_s = time.perf_counter() - t0
                    schedule.saved()
                progress.update(run.step, metrics)
                if run.rank == 0 and rc.log_every and run.step % rc.log_every == 0:
                    console_summary(run.step, metrics)
                if stop:
                    preempted = schedule.announce_stop(run.step)
                    break
        if run.step == rc.steps and rc.steps > 0:
            watchdog.report("final evaluation, checkpoint and export")
            final = evaluate_run(run) if run.eval_records else {}
            if final:
                run.logger.log(run.step, final)
                metrics.update(final)
            save(run)
            if rc.export_hf:
                from r1mega.models import export_hf
                # A separate tokenizer (model.tokenizer_path) stays separate: copied into a model
                # directory, transformers would read it as the architecture's own tokenizer class.
                export_hf(run.policy.modules, run.arch, os.path.join(run.run_dir, "hf"),
                          tokenizer_dir=None if cfg.model.tokenizer_path else cfg.model.hf_path)
    finally:
        progress.close()
        run.logger.close()
    return RLResult(run=run, metrics=metrics, preempted=preempted)


def evaluate_run(run: RLRun) -> dict[str, float]:
    """Held-out pass@1 / cons@k / pass@k / greedy accuracy with the current policy (engine already synced)."""
    from r1mega.eval.evaluate import evaluate_engine
    watchdog.report("eval")
    run.engine.wake_up()
    recording = run.engine.records_routing
    if recording:  # MoE routing replay: held-out samples are never trained on
        run.engine.record_routing(False)
    try:
        out = evaluate_engine(run.engine, run.eval_records, run.cfg)
    finally:
        if recording:
            run.engine.record_routing(True)
    run.engine.sleep()
    return out
