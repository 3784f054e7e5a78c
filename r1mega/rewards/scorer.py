"""Score samples with the configured rewards in a pool of worker processes, with a per-sample
time limit: a reward that hangs or crashes costs that sample a defined score and a logged error,
never a stuck RL step.

Design. Each worker is a spawned (or forkserver) process with its own pipe and takes one sample at
a time, so the parent always knows which sample a worker holds and since when. A sample that runs
past ``cfg.timeout_s`` has its worker killed (SIGKILL) and replaced; a worker that dies (segfault,
os._exit) is replaced too. Replacements boot in the background and are used once they report
ready, so a sample's clock starts only when a booted worker receives it. The pool lives across
steps (create one :class:`RewardScorer` and ``close()`` it at the end; :func:`score_samples` keeps
a module-level one). Reward functions and the config are sent to workers by pickle, so they must
be module-level functions (see ``registry.py``). Scripts that use the pool need an
``if __name__ == "__main__":`` guard (spawn re-imports the main module).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import pickle
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Mapping

from r1mega.config.base import choose
from r1mega.rewards.config import RewardConfig
from r1mega.rewards.plugins import batch_table, reward_table
from r1mega.rewards.result import RewardFn, RewardResult
from r1mega.types import Sample

log = logging.getLogger("r1mega.rewards")

BOOT_TIMEOUT_S = 120.0


def evaluate(fns: Mapping[str, RewardFn], text: str, answer: str | None, meta: dict, cfg: RewardConfig) -> dict:
    """Run every reward on one sample: {"scores": {name: float}, "infos": {...}, "errors": {name: msg}}.
    An exception in one reward is recorded in ``errors``; the others still run."""
    scores, infos, errors = {}, {}, {}
    for name, fn in fns.items():
        try:
            res = fn(text, answer, meta, cfg)
            if isinstance(res, RewardResult):
                scores[name], infos[name] = float(res.score), res.info
            else:  # a plug-in may return a bare number
                scores[name], infos[name] = float(res), {}
        except Exception as e:  # noqa: BLE001 - any failure of a reward is that sample's error
            errors[name] = f"{type(e).__name__}: {e}"
    return {"scores": scores, "infos": infos, "errors": errors}


def _worker_main(conn: Connection, fns: dict, cfg: RewardConfig) -> None:
    """Worker loop: receive (task_id, text, answer, meta), send ("done", task_id, result)."""
    try:
        import sympy  # noqa: F401  warm the import so no sample's time limit pays for it
    except ImportError:
        pass
    conn.send(("ready",))
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        task_id, text, answer, meta = task
        out = evaluate(fns, text, answer, meta, cfg)
        try:
            conn.send(("done", task_id, out))
        except Exception:  # noqa: BLE001 - an info dict that does not pickle: send it as text
            out["infos"] = {k: repr(v) for k, v in out["infos"].items()}
            conn.send(("done", task_id, out))


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    ready: bool = False
    task: int | None = None
    started: float = 0.0


def _failed(scores: dict | None, infos: dict | None, message: str, timeout: bool) -> dict:
    return {"scores": scores or {}, "infos": infos or {}, "errors": {"_worker": message}, "timeout": timeout}


class RewardScorer:
    """A reusable pool that scores lists of samples (see the module docstring)."""

    def __init__(self, cfg: RewardConfig, rewards: Mapping[str, RewardFn] | None = None):
        self.cfg = cfg
        table = reward_table(cfg.functions) if rewards is None else dict(rewards)
        batch = batch_table(cfg.batch_functions, table)
        self.fns = {name: choose("reward", name, {**table, **batch}) for name in cfg.weights if name not in batch}
        self.batch_fns = {name: fn for name, fn in batch.items() if name in cfg.weights}
        self._ctx = mp.get_context(cfg.start_method)
        self._workers: list[_Worker] = []
        self._closed = False
        self.last_stats: dict[str, float] = {}

    # ---------------------------------------------------------------- pool management
    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(target=_worker_main, args=(child, self.fns, self.cfg), daemon=True,
                                 name="r1mega-reward-worker")
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def _kill(self, w: _Worker) -> None:
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5)
        w.conn.close()

    def _replace(self, w: _Worker) -> None:
        self._kill(w)
        self._workers[self._workers.index(w)] = self._spawn()

    def start(self, wait_ready: bool = True) -> None:
        """Start the workers (done lazily by :meth:`score`); optionally wait until all are booted."""
        if self._closed:
            raise RuntimeError("RewardScorer is closed")
        while len(self._workers) < self.cfg.num_workers:
            self._workers.append(self._spawn())
        end = time.monotonic() + BOOT_TIMEOUT_S
        while wait_ready and not all(w.ready for w in self._workers):
            booting = [w for w in self._workers if not w.ready]
            for conn in wait([w.conn for w in booting], timeout=max(0.0, end - time.monotonic())):
                self._on_message(next(w for w in booting if w.conn is conn), None)
            if time.monotonic() > end:
                raise RuntimeError(f"reward workers did not start within {BOOT_TIMEOUT_S} s")

    def close(self) -> None:
        """Stop all workers (idempotent)."""
        for w in self._workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self._workers:
            w.proc.join(timeout=1)
            self._kill(w)
        self._workers = []
        self._closed = True

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # ---------------------------------------------------------------- scoring
    def _on_message(self, w: _Worker, results: list | None) -> None:
        """Read one message of worker ``w``; a dead worker is replaced (its sample fails)."""
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            code = w.proc.exitcode
            if w.task is not None and results is not None:
                results[w.task] = _failed(None, None, f"worker died (exit code {code})", timeout=False)
            self._boot_failures += 0 if w.ready else 1
            if self._boot_failures > 3 * max(1, self.cfg.num_workers):
                raise RuntimeError(f"reward workers keep dying while starting (exit code {code})")
            self._replace(w)
            return
        if msg[0] == "ready":
            w.ready = True
        elif msg[0] == "done" and results is not None:
            results[msg[1]] = msg[2]
            w.task = None

    def _run_pool(self, tasks: list[tuple]) -> list[dict]:
        self.start(wait_ready=False)
        timeout = self.cfg.timeout_s
        results: list[dict | None] = [None] * len(tasks)
        pending = deque(range(len(tasks)))
        while pending or any(w.task is not None for w in self._workers):
            now = time.monotonic()
            for w in list(self._workers):
                if w.ready and w.task is None and pending:
                    i = pending.popleft()
                    try:
                        w.conn.send(tasks[i])
                    except (pickle.PicklingError, TypeError, AttributeError) as e:  # pickled before writing
                        results[i] = _failed(None, None, f"sample does not pickle: {e}", timeout=False)
                        continue
                    except (OSError, ValueError):
                        pending.appendleft(i)
                        self._replace(w)
                        continue
                    w.task, w.started = i, now
            busy = [w for w in self._workers if w.task is not None]
            watch = [w for w in self._workers if w.task is not None or not w.ready]
            next_deadline = min((w.started + timeout for w in busy), default=now + 1.0)
            for conn in wait([w.conn for w in watch], timeout=max(0.0, next_deadline - now) + 1e-3):
                self._on_message(next(w for w in self._workers if w.conn is conn), results)
            now = time.monotonic()
            for w in [w for w in self._workers if w.task is not None and now - w.started > timeout]:
                results[w.task] = _failed(None, None, f"timed out after {timeout} s", timeout=True)
                self._replace(w)
        return results  # type: ignore[return-value]

    def score(self, samples: list[Sample]) -> dict[str, float]:
        """Set ``reward``, ``reward_breakdown`` (each reward's unweighted score, plus ``error`` and
        ``timeout`` flags as 0/1) and ``metadata["reward_info"]`` on every sample. A sample whose
        reward raised, timed out or crashed its worker gets ``cfg.timeout_score`` and a logged warning.
        Returns {"n_error", "n_timeout", "seconds"}."""
        if self._closed:
            raise RuntimeError("RewardScorer is closed")
        t0 = time.monotonic()
        self._boot_failures = 0
        tasks = [(i, s.response_text, s.answer, _meta(s)) for i, s in enumerate(samples)]
        if self.cfg.num_workers == 0:
            results = [evaluate(self.fns, *t[1:], self.cfg) for t in tasks]
        else:
            results = self._run_pool(tasks)
        for name, fn in self.batch_fns.items():
            score_batch(name, fn, tasks, results, self.cfg)
        n_err = n_timeout = 0
        for i, (s, out) in enumerate(zip(samples, results)):
            timed_out = bool(out.get("timeout", False))
            failed = bool(out["errors"])
            breakdown = dict(out["scores"])
            breakdown["error"] = float(failed and not timed_out)
            breakdown["timeout"] = float(timed_out)
            if failed:
                n_err += not timed_out
                n_timeout += timed_out
                log.warning("reward failed for sample %d (group %d): %s; scored %s", i, s.group_id,
                            "; ".join(f"{k}: {v}" for k, v in out["errors"].items()), self.cfg.timeout_score)
                s.reward = float(self.cfg.timeout_score)
            else:
                s.reward = float(sum(w * out["scores"][name] for name, w in self.cfg.weights.items()))
            s.reward_breakdown = breakdown
            s.metadata["reward_info"] = out["infos"]
        self.last_stats = {"n_error": float(n_err), "n_timeout": float(n_timeout), "seconds": time.monotonic() - t0}
        return self.last_stats


def score_batch(name: str, fn, tasks: list[tuple], results: list[dict], cfg: RewardConfig) -> None:
    """Run one batch plug-in over every task (in this process) and add its scores to ``results``;
    a raise or a wrong number of scores is an error on every sample of the call."""
    try:
        scores = [float(v) for v in fn([t[1] for t in tasks], [t[2] for t in tasks], [t[3] for t in tasks], cfg)]
        if len(scores) != len(tasks):
            raise ValueError(f"returned {len(scores)} scores for {len(tasks)} samples")
    except Exception as e:  # noqa: BLE001 - any failure of a reward is its samples' error
        for out in results:
            out["errors"][name] = f"{type(e).__name__}: {e}"
        return
    for out, v in zip(results, scores):
        out["scores"][name] = v


def _meta(s: Sample) -> dict:
    meta = {k: v for k, v in s.metadata.items() if k != "reward_info"}
    meta.update(response_len=len(s.response_ids), finish_reason=s.finish_reason)
    return meta


_DEFAULT: RewardScorer | None = None


def score_samples(samples: list[Sample], cfg: RewardConfig) -> None:
    """Score ``samples`` in place with a module-level :class:`RewardScorer` for ``cfg`` (rebuilt when
    the config changes, closed at interpreter exit)."""
    global _DEFAULT
    if _DEFAULT is None or _DEFAULT.cfg != cfg:
        if _DEFAULT is not None:
            _DEFAULT.close()
        _DEFAULT = RewardScorer(cfg)
    _DEFAULT.score(samples)


@atexit.register
def _close_default() -> None:
    if _DEFAULT is not None:
        _DEFAULT.close()
