"""tools/bench_async.py's arithmetic and report (its runs are the loop's, tested in
tests/test_async_rl.py and tests/test_rl_loop.py; the whole tool runs in ~80 s with --smoke)."""

import importlib.util
import os

import pytest

from tests.dist import REPO

spec = importlib.util.spec_from_file_location("bench_async", os.path.join(REPO, "tools", "bench_async.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_steady_state_skips_the_warmup_steps():
    rows = [{"ts": t, "response/len_mean": n, "offpolicy/staleness_mean": s}
            for t, n, s in ((10.0, 4, 0), (14.0, 6, 0), (15.5, 8, 1), (17.0, 6, 1), (18.8, 10, 1))]
    out = bench.steady_state(rows, 2, samples_per_step=32)
    assert out["step_s"] == pytest.approx((18.8 - 14.0) / 3)
    assert out["samples_per_s"] == pytest.approx(32 / out["step_s"])
    assert out["response_len_mean"] == 8 and out["staleness_mean"] == 1
    with pytest.raises(ValueError, match=r"warmup \(5\) must be in \[1, 5\)"):
        bench.steady_state(rows, 5, 32)


def test_report_gives_each_configuration_against_sync():
    summary = {"sync": {"step_s": 2.0, "samples_per_s": 32.0, "staleness_mean": 0.0},
               "async_k0": {"step_s": 2.5, "samples_per_s": 25.6, "staleness_mean": 0.0},
               "async_k1": {"step_s": 1.6, "samples_per_s": 40.0, "staleness_mean": 1.0}}
    rounds = {k: [{"step_s": v["step_s"]}] for k, v in summary.items()}
    args = dict(hidden=256, layers=4, prompts=8, group=8, response=64, steps=12, warmup=3, repeats=1)
    md = bench.markdown({"args": args, "machine": {"cpu": "test cpu"}, "summary": summary, "rounds": rounds,
                         "command": "python tools/bench_async.py"})
    assert "| async_k1 | 1.600 | 40.0 | 0.80x | 1.00 | 1.600 |" in md
    assert "| async_k0 | 2.500 | 25.6 | 1.25x |" in md and "test cpu" in md


def test_bad_warmup_is_refused():
    with pytest.raises(SystemExit):
        bench.main(["--steps", "4", "--warmup", "4"])
