"""Console feedback: a step progress bar with ETA, and a one-line summary every ``log_every``.

    bar = StepProgress(cfg.run.steps, initial=start_step, rank=rank)
    for step in range(start_step + 1, cfg.run.steps + 1):
        ...
        bar.update(step, metrics)                 # step n/N, ETA, reward/acc/len/kl/tok/s
        if step % cfg.run.log_every == 0:
            console_summary(step, metrics, total_steps=cfg.run.steps, rank=rank)
    bar.close()

The bar is tqdm on stderr. On a terminal it redraws in place; when stderr is not a terminal
(a log file, a job scheduler) it prints a plain line at most every ``log_interval`` seconds
instead of carriage-return redraws, so logs stay readable.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, TextIO

from tqdm import tqdm

# metric key -> short label, in the order shown
SHORT_KEYS = {
    "loss": "loss",
    "sft/eval_exact": "exact",
    "reward/mean": "reward",
    "acc/mean": "acc",
    "response/len_mean": "len",
    "actor/kl": "kl",
    "perf/tokens_per_s": "tok/s",
}


def fmt_value(value: Any) -> str:
    """A metric value in about 4 characters: 0.531, 1.2e-03, 812, 5.1k."""
    try:
        v = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 1e6:
        return f"{v / 1e6:.1f}M"
    if a >= 1e4:
        return f"{v / 1e3:.1f}k"
    if a >= 100 or v == int(v):
        return f"{v:.0f}"
    if a >= 0.01:
        return f"{v:.3g}"
    return f"{v:.1e}"


def compact_postfix(metrics: Mapping[str, Any] | None, keys: Mapping[str, str] = SHORT_KEYS) -> str:
    """``"reward=0.53 acc=0.41 len=812 kl=1.2e-03 tok/s=5.1k"`` from whichever keys are present."""
    if not metrics:
        return ""
    return " ".join(f"{short}={fmt_value(metrics[k])}" for k, short in keys.items() if k in metrics)


class StepProgress:
    """tqdm bar over RL steps: ``step n/N``, elapsed, ETA and a compact metric postfix.

    Only rank 0 with ``enabled=True`` draws; elsewhere every method is a no-op. ``initial`` is
    the step a resumed run starts from, so the ETA counts only the steps still to run.
    """

    def __init__(
        self,
        total_steps: int,
        initial: int = 0,
        rank: int = 0,
        enabled: bool = True,
        *,
        desc: str = "step",
        file: TextIO | None = None,
        log_interval: float = 30.0,
    ) -> None:
        self.enabled = enabled and rank == 0
        self._bar = None
        if not self.enabled:
            return
        stream = file if file is not None else sys.stderr
        interactive = bool(getattr(stream, "isatty", lambda: False)())
        if not interactive:
            stream = _LineStream(stream)
        self._bar = tqdm(
            total=total_steps,
            initial=initial,
            desc=desc,
            unit="step",
            file=stream,
            dynamic_ncols=interactive,
            ncols=None if interactive else 140,
            mininterval=0.5 if interactive else log_interval,
            smoothing=0.1,  # steps are long and uneven: a slow EMA gives a steadier ETA
            ascii=not interactive,
            bar_format="{desc} {n_fmt}/{total_fmt} {bar:20} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
        )

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Move the bar to ``step`` (absolute, steps done) and show ``metrics``' key values."""
        if self._bar is None:
            return
        if metrics:
            self._bar.set_postfix_str(compact_postfix(metrics), refresh=False)
        self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> StepProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _LineStream:
    """Turns tqdm's carriage-return redraws into whole lines for non-terminal streams."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, s: str) -> None:
        text = s.replace("\r", "").replace("\x1b[A", "").strip()
        if text:
            self._stream.write(text + "\n")

    def flush(self) -> None:
        self._stream.flush()


def format_summary(step: int, metrics: Mapping[str, Any], total_steps: int | None = None) -> str:
    """``"step 12/100 | reward 0.53 | acc 0.41 | len 812 | kl 1.2e-03 | tok/s 5.1k | 12.3s
    (rollout 66%, train 20%, other 2%)"``; missing keys are left out."""
    parts = [f"step {step}/{total_steps}" if total_steps else f"step {step}"]
    parts += [f"{short} {fmt_value(metrics[k])}" for k, short in SHORT_KEYS.items() if k in metrics]
    step_time = metrics.get("time/step")
    if step_time is not None:
        total = float(step_time)
        stages = [(k[5:], float(v)) for k, v in metrics.items()
                  if k.startswith("time/") and k != "time/step"]
        shares = ", ".join(f"{name} {100 * s / total:.0f}%" for name, s in stages if total > 0)
        parts.append((f"{total:.2f}s" if total < 10 else f"{total:.1f}s") + (f" ({shares})" if shares else ""))
    return " | ".join(parts)


def console_summary(
    step: int,
    metrics: Mapping[str, Any],
    *,
    total_steps: int | None = None,
    rank: int = 0,
    file: TextIO | None = None,
) -> str | None:
    """Print :func:`format_summary` on rank 0 (above any live progress bar); returns the line."""
    if rank != 0:
        return None
    line = format_summary(step, metrics, total_steps)
    tqdm.write(line, file=file if file is not None else sys.stdout)
    return line
