"""Preemption-safe training: SIGTERM / SIGUSR1 save a checkpoint at the next step boundary and exit.

    with StopSignals() as signals:
        schedule = SaveSchedule(signals, steps, rc.save_every, rc.save_every_minutes)
        while step < steps:
            ...one step...
            save, stop = schedule.after_step(step)      # a collective: every rank decides the same
            if save: save_checkpoint(...); schedule.saved()
            if stop: schedule.announce_stop(step); break

Cluster schedulers warn before they kill: Kubernetes and torchrun send SIGTERM (torchrun forwards
its own SIGTERM to every worker and waits 30 s before SIGKILL), SLURM sends SIGUSR1 ahead of the
time limit when asked to (``#SBATCH --signal=USR1@120``, or ``B:USR1`` to a batch script that
passes it on). A first signal sets a flag; the training loop checks it after each step, every
rank agrees (one all-reduce of two flags: "a rank got a signal" and "rank 0's clock says a
time-based save is due"), and all ranks save the same step and leave the loop together. Repeats
are ignored: a scheduler that signals every process while torchrun forwards its own copy must
not kill the save it asked for. To stop at once, use Ctrl-C (SIGINT) or SIGKILL.
"""

from __future__ import annotations

import logging
import signal
import threading
import time

import torch
import torch.distributed as dist

log = logging.getLogger("r1mega.train")

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopSignals:
    """Catch SIGTERM and SIGUSR1 while training (main thread only; elsewhere a no-op)."""

    def __init__(self, signals=SIGNALS):
        self.signals = signals
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # already stopping
            return
        self.received = signal.Signals(signum).name
        log.warning("received %s: saving a checkpoint at the end of this step, then exiting (Ctrl-C or "
                    "SIGKILL stop at once)", self.received)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


def step_boundary(received: str | None, last_save: float, save_every_minutes: float) -> tuple[bool, bool]:
    """Collective over the default group: (stop, save_due). ``stop``: some rank got a stop
    signal. ``save_due``: at least ``save_every_minutes`` since ``last_save`` (``time.monotonic``)
    on rank 0's clock (0 = never)."""
    due = save_every_minutes > 0 and time.monotonic() - last_save >= 60.0 * save_every_minutes
    flags = torch.tensor([float(received is not None), float(due)])
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_rank() != 0:
            flags[1] = 0.0
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0] > 0), bool(flags[1] > 0)


class SaveSchedule:
    """When a training loop checkpoints between steps: every ``save_every`` steps (0: never by
    count), every ``save_every_minutes``, and right away after a stop signal; never after the last
    step, which the loop saves itself. Shared by ``r1mega train``, ``sft`` and ``train-rm``."""

    def __init__(self, signals: StopSignals, total: int, save_every: int, save_every_minutes: float):
        self.signals, self.total = signals, total
        self.save_every, self.save_every_minutes = save_every, save_every_minutes
        self._last_save = time.monotonic()

    def after_step(self, step: int) -> tuple[bool, bool]:
        """(save now, stop after the save) for the step just finished; a collective (see
        :func:`step_boundary`)."""
        stop, due = step_boundary(self.signals.received, self._last_save, self.save_every_minutes)
        periodic = bool(self.save_every) and step % self.save_every == 0
        before_end = step < self.total
        return (periodic or due or stop) and before_end, stop and before_end

    def saved(self) -> None:
        """A checkpoint was just written: the minutes count from now."""
        self._last_save = time.monotonic()

    def announce_stop(self, step: int) -> str:
        """Log the early stop (rank 0) and return what caused it."""
        reason = self.signals.received or "a signal on another rank"
        if not dist.is_initialized() or dist.get_rank() == 0:
            log.warning("stopped by %s after step %d of %d; checkpoint saved, resume with run.resume=auto",
                        reason, step, self.total)
        return reason
