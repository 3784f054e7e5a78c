"""The hung-rank watchdog's logic on an in-memory store and a fake clock (the real-process probes,
SIGSTOP and a collective timeout, are in tests/test_fault_injection.py)."""

import pytest

from r1mega.parallel.watchdog import DONE, HUNG_EXIT_CODE, Beat, Watchdog, explain_timeout, is_collective_timeout


class Store:
    """The three calls of torch.distributed.Store the watchdog uses."""

    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.broken = False

    def set(self, key, value):
        if self.broken:
            raise RuntimeError("Connection reset by peer")
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key):
        if self.broken:
            raise RuntimeError("Connection reset by peer")
        return self.data[key]

    def check(self, keys):
        if self.broken:
            raise RuntimeError("Connection reset by peer")
        return all(k in self.data for k in keys)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.slept = s


class Exit(Exception):
    pass


def _exit(code):
    raise Exit(code)


def _dog(store, clock, rank, world=3, timeout=30.0):
    return Watchdog(store, rank, world, timeout, interval_s=1.0, exit_fn=_exit, clock=clock, sleep=clock.sleep)


def test_a_beating_peer_is_never_flagged_and_a_silent_one_is_named_with_its_stage_and_step(capsys):
    store, clock = Store(), Clock()
    dogs = [_dog(store, clock, r) for r in range(3)]
    dogs[1].report("train", 7)
    dogs[0].report("reward", 7)
    for _ in range(100):  # 100 s of ticks, every rank alive
        clock.t += 1.0
        for d in dogs:
            d.tick()
    # rank 1 stops (SIGSTOP): ranks 0 and 2 tick on
    for _ in range(29):
        clock.t += 1.0
        dogs[0].tick()
        dogs[2].tick()
    clock.t += 2.5  # rank 0 saw rank 1's last beat one tick late: detection within timeout + interval
    with pytest.raises(Exit) as e:
        dogs[0].tick()  # rank 0 watches rank 1
    assert e.value.args == (HUNG_EXIT_CODE,)
    assert clock.slept == 2.0  # the noticing rank lingers 1.5 intervals + 0.5 s so its peers read the record
    err = capsys.readouterr().err
    assert "HUNG RANK: rank 1 (pid" in err and "no heartbeat for 30 s" in err or "no heartbeat for 31 s" in err
    assert "it was last in stage 'train' at step 7" in err
    assert "Rank 0, which noticed, was in stage 'reward' at step 7" in err
    assert "run.hang_timeout_s" in err
    # every other live rank reads the abort record and exits with the same message
    with pytest.raises(Exit):
        dogs[2].tick()
    assert "HUNG RANK: rank 1 (pid" in capsys.readouterr().err


def test_a_rank_that_never_beats_is_flagged_from_the_start():
    store, clock = Store(), Clock()
    dog = _dog(store, clock, 0, world=2, timeout=10.0)
    dog.tick()
    clock.t += 9.0
    dog.tick()
    clock.t += 2.0
    with pytest.raises(Exit):
        dog.tick()
    assert b"rank 1 has sent no heartbeat" in store.data[dog._abort_key]
    assert b"it never sent a heartbeat" in store.data[dog._abort_key]


def test_a_finished_rank_is_skipped_and_its_successor_watched():
    store, clock = Store(), Clock()
    dogs = [_dog(store, clock, r, world=3, timeout=10.0) for r in range(3)]
    for d in dogs:
        d.tick()
    dogs[1].stop(done=True)  # rank 1 finished first (e.g. rank 0 still exports)
    assert store.data[dogs[1]._key(1)] == DONE.encode()
    for _ in range(30):
        clock.t += 1.0
        dogs[0].tick()
        dogs[2].tick()
    assert dogs[0]._peer == 2 and dogs[2]._peer == 0
    dogs[2].stop(done=True)
    for _ in range(30):  # everyone else finished: nothing to watch
        clock.t += 1.0
        dogs[0].tick()
    assert dogs[0]._peer == 0


def test_a_store_that_stops_answering_stops_the_rank_after_the_timeout(caplog):
    store, clock = Store(), Clock()
    dog = _dog(store, clock, 0, world=2, timeout=10.0)
    dog.tick()
    store.broken = True
    clock.t += 1.0
    dog.tick()  # a warning, not an exit
    assert "does not answer" in caplog.text
    clock.t += 10.5
    with pytest.raises(Exit):
        dog.tick()


def test_beats_round_trip_and_bad_timeouts_are_refused():
    b = Beat(12, "final evaluation, checkpoint and export", 40, "node-3", 4711)
    assert Beat.decode(b.encode()) == b
    with pytest.raises(ValueError, match="timeout_s"):
        Watchdog(Store(), 0, 2, 0.0)


def test_collective_timeouts_are_recognised_and_explained_without_a_watchdog():
    gloo = RuntimeError("[third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 5000ms for "
                        "recv operation to complete")
    nccl = RuntimeError("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, "
                        "OpType=ALLREDUCE) ran for 600012 milliseconds before timing out.")
    assert is_collective_timeout(gloo) and is_collective_timeout(nccl)
    assert not is_collective_timeout(RuntimeError("CUDA out of memory")) and not is_collective_timeout(ValueError("x"))
    text = explain_timeout(gloo, 1)
    assert text.startswith("rank 1: a collective waited longer than run.collective_timeout_s")
    assert "Timed out waiting 5000ms" in text and "run.resume=auto" in text
