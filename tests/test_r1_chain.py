"""The whole R1 chain (cold-start SFT -> reasoning RL -> rejection sampling + SFT -> reward-model RL
-> distillation) end to end in its shortened configuration, through the CLI."""

import json
import math
import subprocess
import sys

import pytest

from tests.dist import REPO

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


def test_r1_chain_quick(tmp_path):
    import os
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "chain"
    proc = subprocess.run([sys.executable, "-m", "r1mega.cli", "r1-chain", "--quick", "--out", str(out)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    summary = json.loads((out / "chain.json").read_text())
    stages = [r["stage"] for r in summary["rows"]]
    assert [s.split()[0] for s in stages] == ["0", "1", "2", "3-4", "5-6", "student", "7"]
    for row in summary["rows"]:
        assert 0.0 <= row["pass@1"] <= 1.0 and 0.0 <= row["general_rule_rate"] <= 1.0
        assert math.isfinite(row["response_len"])
    # each stage's model is the one its successor started from, and the files are where the table says
    for row in summary["rows"]:
        assert (out / row["model"] / "config.json").is_file(), row
    assert (out / "rejection" / "stats.json").is_file() and (out / "rejection" / "sft.jsonl").is_file()
    assert (out / "reward_model" / "reward_model" / "reward_model.json").is_file()
    from r1mega.logging.metrics import read_metrics
    general = [m for m in read_metrics(out / "general_rl") if "reward/reward_model" in m]
    assert general and all("reward/accuracy" in m for m in general)  # both reward kinds in every batch
    student = json.loads((out / "student" / "base" / "config.json").read_text())
    assert student["model_type"] == "llama" and student["vocab_size"] != json.loads(
        (out / "teacher" / "base" / "config.json").read_text())["vocab_size"]
    assert "| stage |" in (out / "chain.md").read_text() and "Stage gains (points)" in (out / "chain.md").read_text()
    assert set(summary["gains"]) == {"reasoning_rl_pass@1", "general_rl_general_rule", "general_rl_pass@1",
                                     "distill_pass@1"}
    assert (out / "chain.png").stat().st_size > 1000
    # every training stage changed its starting weights
    from safetensors.torch import load_file

    def weights(d):
        return load_file(str(next((out / d).glob("*.safetensors"))))

    for before, after in [("teacher/base", "cold_start/hf"), ("cold_start/hf", "reasoning_rl/hf"),
                          ("teacher/base", "rs_sft/hf"), ("rs_sft/hf", "general_rl/hf"), ("student/base", "distill/hf")]:
        a, b = weights(before), weights(after)
        assert set(a) == set(b) and any(not (a[k] == b[k]).all() for k in a), (before, after)
