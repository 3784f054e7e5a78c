"""The embedded tiny default, shortened (`r1mega tiny --quick`): every stage runs and writes
its outputs (the full run is the README's first command, not a unit test)."""

import json
import math
import os
import subprocess
import sys

import pytest

from tests.dist import REPO

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_tiny_quick_end_to_end(tmp_path):
    out = tmp_path / "tiny"
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "r1mega.cli", "tiny", "--quick", "--out", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = json.loads((out / "summary.json").read_text())
    for phase in ("before", "after"):
        assert summary[phase]["eval/prompts"] == 8 and summary[phase]["eval/k"] == 2
        assert 0.0 <= summary[phase]["eval/pass@1"] <= 1.0
    assert summary["rl_steps"] == 2 and summary["wall_time_s"] > 0
    for name in ("reward_length.png", "time.png"):
        assert (out / name).stat().st_size > 1000, name
    from r1mega.logging.metrics import read_metrics
    steps = [m for m in read_metrics(out / "grpo") if "actor/loss" in m]
    assert [int(m["step"]) for m in steps] == [1, 2]
    # engine vs trainer logprobs of any policy within the 2 RL steps (Adam, tiny_cpu.yaml's lr 1e-4) of the
    # exported final one, sequences up to model.max_seq_len 480: two fp32 forwards, tests/numerics.py
    from tests.numerics import run_logprob_bound
    tol = run_logprob_bound(str(out / "grpo" / "hf"), 2, lr=1e-4, seq=480)
    assert all(math.isfinite(m["actor/loss"]) and m["rollout/logprob_diff_max"] <= tol for m in steps), tol
    assert (out / "grpo" / "hf" / "config.json").exists()  # the final policy, exported
    from r1mega.checkpoint import find_latest_checkpoint
    assert find_latest_checkpoint(str(out / "grpo" / "checkpoints")).endswith("step_000002")
