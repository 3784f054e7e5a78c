"""Step-time breakdown: seconds per stage of the RL step, and the orchestration overhead.

    timer = StepTimer()
    with timer.step():
        with timer("rollout"):
            ...
        with timer("train"):
            ...
    bd = timer.breakdown()        # StepBreakdown
    logger.log(step, bd.metrics())  # time/rollout, time/train, time/other, time/step
    print(bd.format())            # "step 12.31s | rollout 8.10s 66% | train ... | other 0.21s 2%"

``other`` is the step's wall time minus the time inside named sections: the orchestration
overhead that PERF.md section 2 wants at <= 5% of the step.

Sections may nest; a stage is charged its *exclusive* time (time inside it but not inside a
section nested in it), so the stages plus ``other`` always add up to the step time. A stage
entered more than once in a step accumulates.

CUDA work is asynchronous, so with ``cuda_sync`` the timer calls ``torch.cuda.synchronize()``
before every clock read; the default (``None``) does so only when CUDA is available and
already initialised, so CPU runs never touch CUDA.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

STAGES = ("rollout", "reward", "logprob", "train", "sync", "checkpoint", "eval")
"""Known stages, in the order the breakdown lists them; other names are listed after them."""


@dataclass(frozen=True)
class StepBreakdown:
    """Seconds per stage of one step; ``seconds`` ends with ``other`` and sums to ``total``."""

    seconds: dict[str, float]
    total: float

    @property
    def shares(self) -> dict[str, float]:
        """Each stage's share of the step time (0..1)."""
        return {k: (v / self.total if self.total > 0 else 0.0) for k, v in self.seconds.items()}

    def metrics(self, prefix: str = "time/") -> dict[str, float]:
        """``{"time/<stage>": s, ..., "time/other": s, "time/step": total}`` for MetricsLogger."""
        out = {prefix + k: v for k, v in self.seconds.items()}
        out[prefix + "step"] = self.total
        return out

    def format(self) -> str:
        parts = [f"step {self.total:.2f}s"]
        shares = self.shares
        parts += [f"{k} {v:.2f}s {100 * shares[k]:.0f}%" for k, v in self.seconds.items()]
        return " | ".join(parts)


class StepTimer:
    """Times named sections of a step; ``with timer("rollout"): ...``.

    Args:
        cuda_sync: synchronise CUDA before each clock read. ``None``: only if CUDA is available
            and initialised.
        clock: seconds as a float (``time.perf_counter``; injectable for tests).
        on_enter: called with a section's name as it is entered (the hung-rank watchdog's
            ``report``, so an error can say which stage a rank was in).
    """

    def __init__(self, cuda_sync: bool | None = None, clock: Callable[[], float] = time.perf_counter,
                 on_enter: Callable[[str], None] | None = None) -> None:
        self.cuda_sync = cuda_sync
        self._clock = clock
        self._on_enter = on_enter
        self._step_start: float | None = None
        self._step_end: float | None = None
        self._seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [name, time the section last (re)started counting]

    def _now(self) -> float:
        sync = self.cuda_sync
        if sync is None or sync:
            import torch

            if sync is None:
                sync = torch.cuda.is_available() and torch.cuda.is_initialized()
            if sync:
                torch.cuda.synchronize()
        return self._clock()

    # -- step ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin a step: clears the previous step's sections."""
        if self._stack:
            raise RuntimeError(f"StepTimer.start() inside the open section {self._stack[-1][0]!r}")
        self._seconds = {}
        self._step_end = None
        self._step_start = self._now()

    def stop(self) -> StepBreakdown:
        """End the step and return its breakdown."""
        if self._stack:
            raise RuntimeError(f"StepTimer.stop() inside the open section {self._stack[-1][0]!r}")
        if self._step_start is None:
            raise RuntimeError("StepTimer.stop() before start()")
        self._step_end = self._now()
        return self.breakdown()

    @contextmanager
    def step(self) -> Iterator[StepTimer]:
        """``with timer.step(): ...`` is ``start()`` ... ``stop()``."""
        self.start()
        yield self
        self.stop()

    # -- sections -----------------------------------------------------------------------------
    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if name in ("other", "step"):
            raise ValueError(f"StepTimer section name {name!r} is reserved (computed by the timer)")
        if self._step_start is None or self._step_end is not None:
            raise RuntimeError(f"StepTimer section {name!r} outside a step: call timer.start() first "
                               "or use `with timer.step():`")
        if self._on_enter is not None:
            self._on_enter(name)
        now = self._now()
        if self._stack:  # pause the enclosing section
            outer = self._stack[-1]
            self._seconds[outer[0]] = self._seconds.get(outer[0], 0.0) + now - outer[1]
        self._stack.append([name, now])
        try:
            yield
        finally:
            end = self._now()
            inner = self._stack.pop()
            self._seconds[inner[0]] = self._seconds.get(inner[0], 0.0) + end - inner[1]
            if self._stack:  # resume the enclosing section
                self._stack[-1][1] = end

    # -- result -------------------------------------------------------------------------------
    def breakdown(self) -> StepBreakdown:
        """Seconds per stage of the current (or just stopped) step, with ``other`` last.

        Called on an open step, the step's wall time runs up to now (time in a still-open
        section counts as ``other`` until it closes).
        """
        if self._step_start is None:
            raise RuntimeError("StepTimer.breakdown() before any step was started")
        end = self._step_end if self._step_end is not None else self._now()
        total = end - self._step_start
        names = [s for s in STAGES if s in self._seconds] + [s for s in self._seconds if s not in STAGES]
        seconds = {s: self._seconds[s] for s in names}
        # Clamp float round-off only: sections are inside the step window by construction.
        seconds["other"] = max(0.0, total - sum(seconds.values()))
        return StepBreakdown(seconds=seconds, total=total)
