"""The peer benchmark's arithmetic (benchmarks/peer/bench_peer.py) against hand-computed values:
the FLOPs of each phase, the floor ratios and the medians over runs without their warm-up steps.
The benchmark itself needs TRL's environment and minutes per shape; its tables are in
benchmarks/results/peer_*.md, made by the command they name."""

import importlib.util
import os

import pytest

from tests.dist import REPO

spec = importlib.util.spec_from_file_location("bench_peer", os.path.join(REPO, "benchmarks", "peer", "bench_peer.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

SHAPE = dict(hidden=8, layers=2, heads=2, kv_heads=1, ffn=12, vocab=10, group_size=2, prompts_per_step=3,
             prompt_tokens=3.0)


def test_phase_flops_by_hand():
    # per token: 2 x (2 layers x (q,o: 2*8*8 + k,v: 2*8*4 + mlp: 3*8*12) + head 10*8) = 2 x (2 x 480 + 80) = 2080
    # 3 + 5 = 8 tokens a sequence: 2080 x 8 = 16640; attention 4 x 2 x 8 x 8 x 8 / 2 = 2048; 6 sequences
    fwd = 6 * (16640 + 2048)
    got = bench.phase_flops(SHAPE, completion_len=5.0, old_pass=False)
    assert got == {"generation": fwd, "scoring": fwd, "train": 3 * fwd}
    assert bench.phase_flops(SHAPE, completion_len=5.0, old_pass=True)["scoring"] == 2 * fwd


def test_floor_ratios_and_medians_leave_out_warmup():
    steps = [{"step_s": 9.0, "generation": 5.0, "scoring": 1.0, "train": 3.0, "sync": 0.0, "other": 0.0}] + \
        [{"step_s": s, "generation": s / 2, "scoring": s / 4, "train": s / 4, "sync": 0.0, "other": 0.0}
         for s in (1.0, 2.0, 3.0)]
    runs = [{"steps": steps, "startup_s": 4.0, "peak_memory": 2 ** 30, "wall_s": 20.0, "completion_len": 5.0},
            {"steps": steps, "startup_s": 6.0, "peak_memory": 2 ** 31, "wall_s": 22.0, "completion_len": 5.0}]
    summary = bench.summarize(runs, warmup=1)
    assert summary["median_step_s"] == 2.0 and summary["steps_counted"] == 6  # the 9 s warm-up steps are out
    assert summary["phases_median_s"]["generation"] == 1.0 and summary["startup_s"] == 5.0
    assert summary["peak_memory_gb"] == 2.0
    fwd = 6 * (16640 + 2048)
    ratios = bench.floor_ratios(summary, SHAPE, gflops=1e-6, old_pass=False)  # 1000 FLOP/s
    assert ratios["generation"] == pytest.approx(1.0 / (fwd / 1e3))
    assert ratios["train"] == pytest.approx(0.5 / (3 * fwd / 1e3))
    assert ratios["step"] == pytest.approx(2.0 / (5 * fwd / 1e3))
    with pytest.raises(ValueError, match="warmup"):
        bench.summarize(runs, warmup=4)
