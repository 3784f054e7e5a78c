"""Metrics, console feedback and plots for r1mega runs.

- :mod:`r1mega.logging.metrics`  ``MetricsLogger`` (metrics.jsonl, TensorBoard, W&B), ``read_metrics``
  and the metric key naming convention
- :mod:`r1mega.logging.timers`   ``StepTimer``: seconds per RL stage and the ``other`` overhead
- :mod:`r1mega.logging.progress` ``StepProgress`` (tqdm bar with ETA), ``console_summary``
- :mod:`r1mega.logging.plots`    ``plot_run`` (matplotlib; imported on first use)
- :mod:`r1mega.logging.console`  ``setup_logging``: the console set-up of every command entry point

Note: this package is ``r1mega.logging``; the stdlib ``logging`` is unaffected (absolute imports).
"""

from __future__ import annotations

from r1mega.logging.metrics import MetricsLogger, read_metrics
from r1mega.logging.progress import StepProgress, console_summary
from r1mega.logging.timers import StepBreakdown, StepTimer

__all__ = ["MetricsLogger", "read_metrics", "StepTimer", "StepBreakdown", "StepProgress", "console_summary",
           "plot_run"]


def __getattr__(name: str):
    if name == "plot_run":  # keeps matplotlib off the import path of the trainer until used
        from r1mega.logging.plots import plot_run

        return plot_run
    raise AttributeError(f"module 'r1mega.logging' has no attribute {name!r}")
