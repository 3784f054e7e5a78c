"""R1-Zero on code prompts end to end: two ranks, the colocated vLLM engines, a tiny model, every
sample's program run on its row's tests in the sandbox; then ``r1mega eval`` on the same prompts.

``r1mega tiny --preset code_check`` pretrains a tiny base on Python programs for the synthetic code
task (r1mega.data.synthetic: print a linear expression of two input integers), right half of the
time and otherwise a near miss or a crash, so the base passes some tests and fails others. Its
programs reach the reward only through the sandbox: a sample passes when its program, run by
``python3`` in the sandbox, prints the expected lines. What must hold:

* some programs pass and some fail (the reward separates them: there is a signal to learn from);
* no sample's reward is an infrastructure error or a scorer timeout;
* the step's ``acc/mean`` is the code reward's all-pass rate (the task's own correctness reward);
* ``r1mega eval`` scores the held-out code prompts with the same reward.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.dist import REPO, torchrun
from tests.sandbox_support import needs_userns

pytestmark = [pytest.mark.multiproc, pytest.mark.vllm, pytest.mark.slow, needs_userns]


def test_code_rl_two_ranks_scored_in_the_sandbox_then_eval(tmp_path):
    out = tmp_path / "code"
    torchrun("-m", "r1mega.cli", "tiny", "--preset", "code_check", "--out", str(out), nproc=2, timeout=600)
    from r1mega.logging.metrics import read_metrics

    records = read_metrics(out / "grpo")
    steps = sorted((m for m in records if "reward/mean" in m), key=lambda m: m["step"])
    evals = [m for m in records if "eval/pass@1" in m]
    assert [int(m["step"]) for m in steps] == [1, 2]
    for m in steps:
        assert m["reward/error"] == 0.0 and m["reward/timeout"] == 0.0, m
        assert m["acc/mean"] == pytest.approx(m["reward/code"]), m  # all-pass code reward = correctness
    rates = [m["reward/code"] for m in steps] + [m["eval/pass@1"] for m in evals]
    assert len(evals) == 2 and any(r > 0 for r in rates) and any(r < 1 for r in rates), rates

    table = tmp_path / "eval.json"
    cmd = [sys.executable, "-m", "r1mega.cli", "eval", "--model", str(out / "grpo" / "hf"),
           "--data", f"synth_code={out / 'data' / 'eval.jsonl'}", "--out", str(table),
           f"model.tokenizer_path={out / 'tokenizer'}", "data.template=r1_zero_compact", "eval.k=4",
           "model.max_seq_len=320", "data.max_prompt_len=160", "rollout.max_new_tokens=80", "reward.timeout_s=30"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "2", "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr[-6000:]
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("synth_code"))
    got = json.loads(table.read_text())["benchmarks"]["synth_code"]
    assert row[1:3] == ["8", "4"] and got["samples"] == 32 and got["scoring_errors"] == 0, (row, got)
    assert 0.0 < got["pass@k"] and got["pass@1"] < 1.0, got  # the base's programs: some pass, some fail
    assert "unscored" not in proc.stdout and "WARNING" not in proc.stderr
