"""Hung-rank detection: a heartbeat per rank, watched by its neighbour in a ring.

    init_distributed(run=cfg.run)          # starts the watchdog when world > 1 and run.hang_timeout_s > 0
    watchdog.report(stage="rollout", step=3)  # cheap; the training loops call it at every stage

A rank that stops making progress at the process level (SIGSTOP, a node swapping itself to death,
a frozen GPU driver call, a lost machine) never reaches the next collective; its peers wait in
theirs, silently, until the collective timeout (10 minutes by default in torch and megatron).
Here each rank runs a daemon thread that every ``interval`` seconds

1. writes its heartbeat to the job's rendezvous store (torchrun's TCPStore): a counter, the stage
   and step the rank last reported, its host and pid;
2. reads the heartbeat of the next live rank in the ring (rank r watches r+1, so the store sees
   O(world) reads per interval, not O(world^2)); if that counter has not moved for
   ``timeout_s`` of this rank's clock (clocks are never compared across hosts), it writes an
   abort record naming the rank, its stage and step;
3. reads the abort record: every live rank prints it and exits with :data:`HUNG_EXIT_CODE`, so
   torchrun tears the job down with the reason on every console, not just on one.

The heartbeat thread holds the GIL only for a few microseconds per beat and collectives release
it, so a rank that merely waits in a collective keeps beating: a heartbeat that stops means the
*process* stopped. A rank that runs but never arrives (a Python-level deadlock) is caught by
the collective timeout instead (``run.collective_timeout_s``, applied to every process group,
megatron's included, on gloo and NCCL); :func:`explain_timeout` turns that error into one that
lists each rank's stage and step from the heartbeats, so the rank that is elsewhere stands out.

A rank that finishes cleanly marks itself ``done`` (atexit), and its watcher moves on to the next
rank: a rank that exits first while others still export or evaluate is not a hang.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("r1mega.watchdog")

HUNG_EXIT_CODE = 3
"""Exit code of a rank stopped by the watchdog (2 is bad input, 1 any other error)."""

DONE = "done"


@dataclass(frozen=True)
class Beat:
    """One rank's last heartbeat as read from the store."""

    count: int
    stage: str
    step: int
    host: str
    pid: int

    def encode(self) -> str:
        return f"{self.count}|{self.step}|{self.host}|{self.pid}|{self.stage}"

    @staticmethod
    def decode(raw: str) -> Beat:
        count, step, host, pid, stage = raw.split("|", 4)
        return Beat(int(count), stage, int(step), host, int(pid))

    def where(self) -> str:
        return f"stage {self.stage!r} at step {self.step}"


class Watchdog:
    """The heartbeat thread of one rank (see the module docstring).

    Args:
        store: a ``torch.distributed.Store`` shared by the job (``set``/``get``/``check``).
        rank, world: this process's global rank and the world size.
        timeout_s: seconds without a heartbeat from the watched rank before the job is stopped.
        interval_s: seconds between beats (default ``min(5, timeout_s / 6)``).
        exit_fn: called with :data:`HUNG_EXIT_CODE` after the message is printed (``os._exit``:
            the main thread may be blocked in a collective that will never return).
        clock, sleep: monotonic seconds and a sleep (injectable for tests).
    """

    def __init__(self, store, rank: int, world: int, timeout_s: float, *, interval_s: float | None = None,
                 exit_fn=os._exit, clock=time.monotonic, sleep=time.sleep,
                 prefix: str = "r1mega/heartbeat") -> None:
        if timeout_s <= 0:
            raise ValueError(f"watchdog timeout_s ({timeout_s}) must be > 0")
        self.store, self.rank, self.world, self.timeout_s = store, rank, world, float(timeout_s)
        self.interval_s = interval_s if interval_s is not None else min(5.0, self.timeout_s / 6)
        self.exit_fn, self.clock, self.sleep, self.prefix = exit_fn, clock, sleep, prefix
        self.stage, self.step = "setup", 0
        self._count = 0
        self._host, self._pid = socket.gethostname(), os.getpid()
        self._peer = (rank + 1) % world
        self._peer_count: int | None = None
        self._peer_seen = clock()
        self._store_failed_at: float | None = None
        self._linger_s = 0.0
        self._stop = threading.Event()
        self._wake = threading.Event()  # a report: beat now, so peers' error messages are current
        self._thread: threading.Thread | None = None

    # -- keys -----------------------------------------------------------------------------------
    def _key(self, rank: int) -> str:
        return f"{self.prefix}/rank{rank}"

    @property
    def _abort_key(self) -> str:
        return f"{self.prefix}/abort"

    # -- what the loops call --------------------------------------------------------------------
    def report(self, stage: str | None = None, step: int | None = None) -> None:
        if stage is not None:
            self.stage = stage
        if step is not None:
            self.step = int(step)
        self._wake.set()

    def start(self) -> Watchdog:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="r1mega-watchdog", daemon=True)
        self._thread.start()
        return self

    def stop(self, done: bool = True) -> None:
        """Stop beating; ``done`` tells the watcher this rank finished (not hung)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.interval_s + 1)
        if done:
            try:
                self.store.set(self._key(self.rank), DONE)
            except Exception:  # the store may already be gone at interpreter exit
                pass

    # -- one tick ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.tick()

    def tick(self) -> None:
        """Beat, then obey an abort record, then check the watched rank."""
        try:
            self.beat()
            if self.store.check([self._abort_key]):
                msg = self.store.get(self._abort_key).decode()
            else:
                msg = self.check_peer()
                if msg is not None:
                    self.store.set(self._abort_key, msg)
                    # Linger a little before exiting: when this process ends, the collectives of the
                    # others fail at once ("connection closed by peer"), and they should read this
                    # record first (their next beat is at most one interval away).
                    self._linger_s = 1.5 * self.interval_s + 0.5
            self._store_failed_at = None
        except Exception as e:  # the store went away: torchrun's agent is gone
            now = self.clock()
            msg = None
            if self._store_failed_at is None:
                self._store_failed_at = now
                log.warning("rank %d: the job's rendezvous store does not answer (%s)", self.rank, e)
            elif now - self._store_failed_at > self.timeout_s:
                msg = (f"the job's rendezvous store has not answered for {now - self._store_failed_at:.0f} s "
                       f"(torchrun's agent is gone); this rank was in {self.where()}")
        if msg is not None:
            self._exit(msg)

    def beat(self) -> None:
        self._count += 1
        self.store.set(self._key(self.rank), Beat(self._count, self.stage, self.step, self._host, self._pid).encode())

    def _read(self, rank: int) -> str | None:
        key = self._key(rank)
        return self.store.get(key).decode() if self.store.check([key]) else None

    def check_peer(self) -> str | None:
        """The abort message if the watched rank has been silent for ``timeout_s``, else None."""
        now = self.clock()
        raw = self._read(self._peer) if self._peer != self.rank else DONE
        while raw == DONE and self._peer != self.rank:  # finished: watch the next rank in the ring
            self._peer = (self._peer + 1) % self.world
            self._peer_count, self._peer_seen = None, now
            raw = self._read(self._peer) if self._peer != self.rank else DONE
        if self._peer == self.rank:  # every other rank finished
            return None
        beat = Beat.decode(raw) if raw is not None else None
        count = beat.count if beat is not None else None
        if count != self._peer_count:
            self._peer_count, self._peer_seen = count, now
            return None
        silent = now - self._peer_seen
        if silent < self.timeout_s:
            return None
        if beat is None:
            who, where = f"rank {self._peer}", "its start-up (it never sent a heartbeat)"
        else:
            who, where = f"rank {self._peer} (pid {beat.pid} on {beat.host})", beat.where()
        msg = (f"{who} has sent no heartbeat for {silent:.0f} s (run.hang_timeout_s={self.timeout_s:g}); "
               f"it was last in {where}. Rank {self.rank}, which noticed, was in {self.where()}. The rank is "
               f"stopped or hung (SIGSTOP, out of memory and swapping, a stuck device or file system): the job "
               f"stops now; resume from the last checkpoint with run.resume=auto. If that rank's work can "
               f"legitimately block it for this long, raise run.hang_timeout_s")
        return msg

    def where(self) -> str:
        return f"stage {self.stage!r} at step {self.step}"

    def _exit(self, msg: str) -> None:
        print(f"[r1mega rank{self.rank}] HUNG RANK: {msg}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        self._stop.set()
        if self._linger_s:
            self.sleep(self._linger_s)
        self.exit_fn(HUNG_EXIT_CODE)

    def abort_message(self) -> str | None:
        """The job's abort record, if a watchdog wrote one."""
        try:
            return self.store.get(self._abort_key).decode() if self.store.check([self._abort_key]) else None
        except Exception:
            return None

    # -- for error messages -----------------------------------------------------------------------
    def snapshot(self) -> dict[int, str]:
        """Every rank's last heartbeat, as "stage ... at step N" (or "finished" / "no heartbeat")."""
        out = {}
        for r in range(self.world):
            try:
                raw = self._read(r)
            except Exception:
                raw = None
            out[r] = "no heartbeat" if raw is None else "finished" if raw == DONE else Beat.decode(raw).where()
        return out


_current: Watchdog | None = None


def start(store, rank: int, world: int, timeout_s: float, **kw) -> Watchdog:
    """Start this process's watchdog (once; later calls return the running one)."""
    global _current
    if _current is None:
        _current = Watchdog(store, rank, world, timeout_s, **kw).start()
        atexit.register(stop)
    return _current


def current() -> Watchdog | None:
    return _current


def stop(done: bool = True) -> None:
    global _current
    if _current is not None:
        _current.stop(done)
        _current = None


def report(stage: str | None = None, step: int | None = None) -> None:
    """Tell the watchdog (if one runs) where this rank is; a no-op otherwise."""
    if _current is not None:
        _current.report(stage, step)


def abort_message() -> str | None:
    """The hung-rank record of this job, if a watchdog wrote one (a collective that failed because a
    peer exited may have failed for that reason)."""
    return _current.abort_message() if _current is not None else None


def is_collective_timeout(e: BaseException) -> bool:
    """A gloo or NCCL collective that gave up waiting (their messages differ by backend)."""
    text = str(e)
    return isinstance(e, RuntimeError) and ("Timed out" in text or "timed out" in text or "Watchdog caught "
                                            "collective operation timeout" in text)


def explain_timeout(e: BaseException, rank: int) -> str:
    """The message for a collective timeout: where every rank is, from the heartbeats."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    lines = [f"rank {rank}: a collective waited longer than run.collective_timeout_s for the other ranks "
             f"({first})."]
    if _current is not None:
        lines.append(f"This rank was in {_current.where()}. Where each rank last reported:")
        lines += [f"  rank {r}: {where}" for r, where in _current.snapshot().items()]
        lines.append("A rank at another stage or step than the rest is the one that did not arrive.")
    lines.append("Resume from the last checkpoint with run.resume=auto; if a stage legitimately keeps some "
                 "ranks waiting this long, raise run.collective_timeout_s.")
    return "\n".join(lines)
