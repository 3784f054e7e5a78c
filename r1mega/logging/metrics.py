"""Per-step metrics: one JSON line per step, TensorBoard scalars, optional W&B.

Key naming convention (``/`` separates the group; TensorBoard and W&B group by it):

==============================  ===========================================================
key                             meaning
==============================  ===========================================================
``reward/mean``                 mean total reward over the step's samples
``reward/<name>``               mean of one reward component (``reward/accuracy``,
                                ``reward/format``, ``reward/length_penalty`` ...)
``acc/mean``                    share of samples judged correct (0..1)
``response/len_mean``           mean response length in tokens
``response/len_max``            longest response in tokens
``response/clip_frac``          share of responses cut at ``max_new_tokens`` (truncated)
``actor/loss``                  policy loss of the train step
``actor/entropy``               mean token entropy of the policy on the trained tokens
``actor/kl``                    KL(policy || reference), mean per token
``actor/clip_frac``             share of tokens where the PPO/GRPO ratio was clipped
``actor/grad_norm``             global gradient norm before clipping
``actor/lr``                    learning rate used this step
``rollout/logprob_diff_mean``   mean abs(logp_train - logp_rollout) on the same tokens
``rollout/logprob_diff_max``    max of the same
``perf/tokens_per_s``           generated + trained tokens per second of step time
``time/<stage>``                seconds spent in a stage (``rollout``, ``reward``,
                                ``logprob``, ``train``, ``sync``, ``checkpoint``, ``eval``,
                                ``other``) and ``time/step`` for the whole step; see
                                :class:`r1mega.logging.timers.StepTimer`
``eval/pass@1``                 eval pass@1 (mean over samples per prompt)
``eval/cons@k``                 eval majority vote over k samples, answers grouped by the
                                verifier's equivalence (DeepSeek-R1's cons@k); ``eval/maj@k``
                                is the same value under its former name
``eval/pass@k``                 eval unbiased pass@k at the k samples
``eval/greedy_acc``             eval accuracy of greedy decoding
==============================  ===========================================================

The file format of ``metrics.jsonl``: one JSON object per line,
``{"step": 12, "ts": 1718000000.1, "reward/mean": 0.41, ...}``. ``step`` and ``ts`` (unix
time of the ``log`` call) are reserved. Values are numbers; JSON has no NaN or infinity, so
non-finite values are written as the strings ``"nan"``, ``"inf"`` and ``"-inf"`` (the file
stays strict JSON and keeps which one it was); :func:`read_metrics` turns them back into
floats. Each line is flushed when written, so a crash loses at most the step in flight.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
RESERVED_KEYS = ("step", "ts")
_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def to_number(key: str, value: Any) -> int | float:
    """A metric value as a Python int/float: accepts numbers, bools, numpy and torch scalars."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if hasattr(value, "item"):  # torch / numpy scalar or one-element tensor
        shape = tuple(getattr(value, "shape", ()))
        if math.prod(shape) != 1:
            raise ValueError(f"metric {key!r} must be a scalar, got a tensor of shape {shape}")
        item = value.item()
        if isinstance(item, bool):
            return int(item)
        if isinstance(item, (int, float)):
            return item
    raise TypeError(f"metric {key!r} must be a number or a scalar tensor, got {type(value).__name__}: {value!r}")


def _encode(value: int | float) -> int | float | str:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Records of a ``metrics.jsonl`` (or of a run directory holding one), in file order.

    Non-finite values come back as floats. A last line cut short by a crash is skipped; a
    malformed line elsewhere is an error naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path} (expected the {METRICS_FILE} a run writes)")
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # partial write at a crash
                warnings.warn(f"{path}:{i + 1}: skipping a truncated last line", RuntimeWarning, stacklevel=2)
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON line ({e})") from e
        if not isinstance(raw, dict) or "step" not in raw:
            raise ValueError(f"{path}:{i + 1}: expected a JSON object with a 'step' key, got {line[:80]!r}")
        records.append({k: _decode(v) for k, v in raw.items()})
    return records


def truncate_metrics(path: str | os.PathLike, last_step: int) -> int:
    """Keep only the records with ``step <= last_step`` (and drop unparseable lines); returns how
    many lines were dropped. Rewrites atomically (temp file + rename)."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            dropped += 1
            continue
        if step <= last_step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
    return dropped


class MetricsLogger:
    """Writes per-step scalars to ``run_dir/metrics.jsonl``, TensorBoard and (optionally) W&B.

    Only ``rank == 0`` writes anything; on other ranks every method is a no-op, so the trainer
    can call it unconditionally with its global rank.

    ``resume_step=N`` continues a run whose checkpoint is at step N: lines of ``metrics.jsonl``
    with ``step > N`` (logged after that checkpoint, before a crash) are removed, TensorBoard is
    told to purge its events from step N+1 on, and W&B resumes the same run id. With
    ``resume_step=None`` (a fresh run) an existing non-empty ``metrics.jsonl`` is moved to
    ``metrics.jsonl.prev`` with a warning, so the file never holds two runs.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        tensorboard: bool = True,
        wandb_project: str | None = None,
        config_dict: Mapping[str, Any] | None = None,
        rank: int = 0,
        resume_step: int | None = None,
        run_name: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self.enabled = rank == 0
        self.dropped_on_resume = 0
        self._file = None
        self._tb = None
        self._wandb = None
        if not self.enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.dropped_on_resume = truncate_metrics(self.path, resume_step)
        elif self.path.is_file() and self.path.stat().st_size > 0:
            prev = self.path.with_name(METRICS_FILE + ".prev")
            warnings.warn(f"{self.path} exists and this is a fresh run (resume_step=None): moved it to {prev}",
                          RuntimeWarning, stacklevel=2)
            os.replace(self.path, prev)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            self._tb = _open_tensorboard(self.run_dir / TENSORBOARD_DIR, resume_step, config_dict)
        if wandb_project:
            self._wandb = _open_wandb(self.run_dir, wandb_project, run_name or self.run_dir.name,
                                      config_dict, resume=resume_step is not None)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (name -> scalar) for ``step``: one flushed JSON line, TB scalars, W&B."""
        if not self.enabled:
            return
        if self._file is None:
            raise RuntimeError("MetricsLogger.log called after close()")
        for key in RESERVED_KEYS:
            if key in metrics:
                raise ValueError(f"metric name {key!r} is reserved in {METRICS_FILE}; pick another name")
        values = {k: to_number(k, v) for k, v in metrics.items()}
        record = {"step": int(step), "ts": round(time.time(), 3)}
        record.update({k: _encode(v) for k, v in values.items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, global_step=int(step))
        if self._wandb is not None:
            self._wandb.log(values, step=int(step))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        """Flush and close every sink; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_tensorboard(log_dir: Path, resume_step: int | None, config_dict: Mapping[str, Any] | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        warnings.warn(f"run.tensorboard is on but TensorBoard is not importable ({e}); "
                      f"logging to {METRICS_FILE} only. `pip install tensorboard` or set run.tensorboard=false.",
                      RuntimeWarning, stacklevel=3)
        return None
    # purge_step makes TensorBoard drop older events at steps >= it: a resumed run replaces the
    # steps logged after its checkpoint, a fresh run in the same directory replaces everything.
    purge_step = 0 if resume_step is None else resume_step + 1
    writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=10)
    if config_dict and resume_step is None:
        text = json.dumps(config_dict, indent=2, default=str)
        writer.add_text("config", "```\n" + text + "\n```", global_step=0)
    return writer


def _open_wandb(run_dir: Path, project: str, name: str, config_dict: Mapping[str, Any] | None, resume: bool):
    try:
        import wandb
    except ImportError as e:
        raise ImportError(f"run.wandb_project={project!r} is set but wandb is not installed ({e}); "
                          "`pip install 'r1mega[wandb]'` or unset run.wandb_project") from None
    # The run id is kept beside the metrics so a resumed run continues the same W&B run.
    id_file = run_dir / "wandb_run_id"
    if resume and id_file.is_file():
        run_id = id_file.read_text().strip()
    else:
        run_id = wandb.util.generate_id()
        id_file.write_text(run_id + "\n")
    return wandb.init(
        project=project,
        name=name,
        id=run_id,
        resume="allow",
        dir=str(run_dir),
        config=dict(config_dict) if config_dict else None,
        mode=os.environ.get("WANDB_MODE", "offline"),
    )
