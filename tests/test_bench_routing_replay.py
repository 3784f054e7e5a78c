"""tools/bench_routing_replay.py: R3 vs none side by side at its ``--smoke`` settings (a real vLLM
engine and Megatron trainer in one process), and its summary arithmetic by hand."""

import json
import os
import subprocess
import sys

import pytest

from tests.dist import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import bench_routing_replay  # noqa: E402


@pytest.mark.vllm
def test_smoke_scores_the_same_samples_with_and_without_replay(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "tools/bench_routing_replay.py", "--smoke", "--out", str(out), "--work", str(work)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "routing_replay.json").read_text())
    assert report["setting"] == "noise" and report["seeds"] == [0]
    run = report["runs"]["qwen3_moe"]["0"]
    assert run["tokens"] > 0
    assert 0 < run["none"]["route_mismatch_used"] == run["none"]["route_mismatch"] < 0.5, run
    assert run["r3"]["route_mismatch_used"] == 0.0 and run["r3"]["route_mismatch"] > 0, run
    assert run["r3"]["logp_diff_mean"] < run["none"]["logp_diff_mean"], run
    assert run["rollout_s_recording"] > 0 and run["rollout_s_plain"] > 0   # the tool checked the tokens are equal
    assert report["summary"]["qwen3_moe"]["rollout_time_recording_over_plain"]["mean"] > 0
    md = (out / "routing_replay.md").read_text()
    assert "| qwen3_moe |" in md and report["command"] in md


def test_summary_over_seeds_by_hand():
    def run(none, r3):
        return {**{m: {"route_mismatch_used": u, "logp_diff_mean": d, "logp_diff_max": 10 * d}
                   for m, (u, d) in (("none", none), ("r3", r3))}, "rollout_s_recording": 1.1, "rollout_s_plain": 1.0}

    s = bench_routing_replay.summarize({"f": {"0": run((0.1, 4e-3), (0.0, 1e-3)), "1": run((0.3, 2e-3), (0.0, 3e-3))}})
    f = s["f"]
    assert f["route_mismatch_used"]["none"] == {"mean": pytest.approx(0.2), "min": 0.1, "max": 0.3}
    assert f["logp_diff_mean"]["none"]["mean"] == pytest.approx(3e-3) and f["logp_diff_mean"]["r3"]["mean"] == pytest.approx(2e-3)
    assert f["logp_diff_mean"]["ratio"] == pytest.approx(1.5)
    assert f["route_mismatch_used"]["ratio"] == float("inf")   # none / 0
    assert f["r3_below_none_every_seed"] is False              # seed 1: 3e-3 > 2e-3
    assert f["rollout_time_recording_over_plain"]["mean"] == pytest.approx(1.1)
