"""StepTimer: stages + other == step wall time, other >= 0, nesting charges exclusive time."""

import time

import pytest

from r1mega.logging.timers import StepTimer


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def advance(self, dt):
        self.t += dt


def test_breakdown_with_fake_clock_is_exact():
    clock = FakeClock()
    timer = StepTimer(cuda_sync=False, clock=clock)
    with timer.step():
        clock.advance(0.5)  # before any section: other
        with timer("train"):
            clock.advance(2.0)
        with timer("rollout"):
            clock.advance(6.0)
        with timer("reward"):
            clock.advance(0.25)
        with timer("rollout"):  # a second visit accumulates
            clock.advance(1.0)
        with timer("custom"):
            clock.advance(0.25)
    bd = timer.breakdown()
    assert bd.total == pytest.approx(10.0)
    assert list(bd.seconds) == ["rollout", "reward", "train", "custom", "other"]  # known stages first
    assert bd.seconds["rollout"] == pytest.approx(7.0) and bd.seconds["other"] == pytest.approx(0.5)
    assert sum(bd.seconds.values()) == pytest.approx(bd.total)
    assert sum(bd.shares.values()) == pytest.approx(1.0) and bd.shares["rollout"] == pytest.approx(0.7)
    m = bd.metrics()
    assert m["time/step"] == pytest.approx(10.0) and m["time/other"] == pytest.approx(0.5)
    assert bd.format().startswith("step 10.00s | rollout 7.00s 70%")


def test_nested_sections_charge_exclusive_time():
    clock = FakeClock()
    timer = StepTimer(cuda_sync=False, clock=clock)
    timer.start()
    with timer("train"):
        clock.advance(1.0)
        with timer("logprob"):
            clock.advance(3.0)
        clock.advance(1.0)
    bd = timer.stop()
    assert bd.seconds == pytest.approx({"logprob": 3.0, "train": 2.0, "other": 0.0})
    assert bd.total == pytest.approx(5.0)


def test_real_clock_sums_to_wall_time_and_other_nonnegative():
    timer = StepTimer()
    t0 = time.perf_counter()
    with timer.step():
        with timer("rollout"):
            time.sleep(0.02)
        time.sleep(0.01)
        with timer("sync"):
            pass
    wall = time.perf_counter() - t0
    bd = timer.breakdown()
    assert 0.03 <= bd.total <= wall
    assert bd.seconds["other"] >= 0.0
    assert sum(bd.seconds.values()) == pytest.approx(bd.total, abs=1e-9)
    assert bd.seconds["rollout"] >= 0.02 and bd.seconds["other"] >= 0.009


def test_next_step_resets_and_errors():
    clock = FakeClock()
    timer = StepTimer(cuda_sync=False, clock=clock)
    with pytest.raises(RuntimeError, match="before any step"):
        timer.breakdown()
    with pytest.raises(RuntimeError, match="outside a step"):
        with timer("rollout"):
            pass
    timer.start()
    with timer("rollout"):
        clock.advance(1.0)
    assert timer.breakdown().total == pytest.approx(1.0)  # open step: up to now
    timer.stop()
    with pytest.raises(RuntimeError, match="outside a step"):
        with timer("rollout"):
            pass
    with timer.step():
        with timer("train"):
            clock.advance(2.0)
    assert set(timer.breakdown().seconds) == {"train", "other"}
    with pytest.raises(ValueError, match="reserved"):
        with timer("other"):
            pass
