"""R1-Zero on code prompts end to end: two ranks, the colocated vLLM engines, a tiny model, every
sample's program run on its row's tests in the sandbox, and the held-out code prompts evaluated
before and after training with the same reward.

``r1mega tiny --preset code_check`` pretrains a tiny base on Python programs for the synthetic code
task (r1mega.data.synthetic: print a linear expression of two input integers), right half of the
time and otherwise a near miss or a crash. Its programs reach the reward only through the sandbox,
scored as the fraction of the row's tests passed; the first test, ``0 0``, is passed by every
program that runs and prints the expression's constant (0 here), failed by one that crashes. What
must hold:

* the code reward is above 0 (programs ran in the sandbox and printed) and below 1 (tests failed);
* no sample's reward is an infrastructure error or a scorer timeout;
* the step's ``acc/mean`` (the task's own correctness rule: all tests pass) is at most the
  fraction reward, and is what the eval's pass@1 measures;
* both evaluations score every held-out response (no scoring error). ``r1mega eval``'s own
  accounting of unscored responses is tested in test_rewards_code.py, without a model.
"""

import pytest

from tests.dist import torchrun
from tests.sandbox_support import needs_userns

pytestmark = [pytest.mark.multiproc, pytest.mark.vllm, pytest.mark.slow, needs_userns]


def test_code_rl_two_ranks_scored_in_the_sandbox_and_evaluated(tmp_path):
    out = tmp_path / "code"
    torchrun("-m", "r1mega.cli", "tiny", "--preset", "code_check", "--out", str(out), nproc=2, timeout=600)
    from r1mega.logging.metrics import read_metrics

    records = read_metrics(out / "grpo")
    steps = sorted((m for m in records if "reward/mean" in m), key=lambda m: m["step"])
    evals = [m for m in records if "eval/pass@1" in m]
    assert [int(m["step"]) for m in steps] == [1, 2]
    for m in steps:
        assert m["reward/error"] == 0.0 and m["reward/timeout"] == 0.0, m
        assert 0.0 < m["reward/code"] < 1.0 and m["acc/mean"] <= m["reward/code"], m
    assert len(evals) == 2 and all(m["eval/scoring_errors"] == 0 for m in evals), evals
