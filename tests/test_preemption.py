"""Stop signals and time-based saves at step boundaries (one process; the RL loop's SIGTERM run
is in tests/test_fault_injection.py)."""

import os
import signal
import time

from r1mega.trainer.preemption import StopSignals, step_boundary


def test_signals_are_caught_once_and_handlers_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    with StopSignals() as signals:
        assert signals.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)  # the handler runs between bytecodes
        assert signals.received == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeat (the scheduler's own copy) does not kill us
        time.sleep(0.01)
        assert signals.received == "SIGUSR1"
        assert step_boundary(signals.received, time.monotonic(), 30.0) == (True, False)
    assert {s: signal.getsignal(s) for s in before} == before


def test_time_based_save_is_due_after_the_interval():
    now = time.monotonic()
    assert step_boundary(None, now, 30.0) == (False, False)
    assert step_boundary(None, now - 31 * 60, 30.0) == (False, True)
    assert step_boundary(None, now - 10 ** 6, 0.0) == (False, False)  # 0 = off


def test_save_schedule_saves_by_count_by_time_and_on_a_signal_but_never_after_the_last_step():
    from r1mega.trainer.preemption import SaveSchedule

    with StopSignals() as signals:
        schedule = SaveSchedule(signals, total=6, save_every=2, save_every_minutes=30.0)
        assert [schedule.after_step(s) for s in (1, 2, 3)] == [(False, False), (True, False), (False, False)]
        assert schedule.after_step(6) == (False, False)  # the loop's own final save
        schedule._last_save -= 31 * 60
        assert schedule.after_step(3) == (True, False)  # 30 minutes since the last save
        schedule.saved()
        assert schedule.after_step(3) == (False, False)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert schedule.after_step(3) == (True, True)
        assert schedule.after_step(6) == (False, False)  # a signal at the end: nothing left to stop
        assert schedule.announce_stop(3) == "SIGTERM"
