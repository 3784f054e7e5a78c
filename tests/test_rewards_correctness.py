"""Each row is judged by its own correctness reward: eval's pass@1, rejection sampling's
"incorrect" filter and the step's acc/mean read the same rule (r1mega.rewards.correctness)."""

from __future__ import annotations

from r1mega.rejection.config import RejectionConfig
from r1mega.rewards.correctness import correctness_reward, is_correct, with_correctness_rewards
from r1mega.types import Sample

MATH = {"source": "math.jsonl"}
CODE = {"input_output": {"inputs": ["1"], "outputs": ["1"]}}
COUNTDOWN = {"task": "countdown", "numbers": [3, 5], "target": 8}


def test_rule():
    assert correctness_reward(MATH) == "accuracy"
    assert correctness_reward(CODE) == "code"
    assert correctness_reward({"public_test_cases": "[]"}) == "code"
    assert correctness_reward(COUNTDOWN) == "countdown"
    assert correctness_reward({**CODE, "correctness": "format"}) == "format"  # the row names its own


def test_missing_correctness_rewards_are_scored_at_weight_zero():
    w = with_correctness_rewards({"accuracy": 1.0, "format": 0.2}, [MATH, CODE, COUNTDOWN])
    assert w == {"accuracy": 1.0, "format": 0.2, "code": 0.0, "countdown": 0.0}


def _sample(meta, breakdown):
    return Sample(prompt_ids=[1], response_ids=[2], group_id=0, metadata=meta, reward_breakdown=breakdown)


def test_a_code_sample_is_judged_by_its_tests_not_by_accuracy():
    assert is_correct(_sample(CODE, {"code": 1.0, "accuracy": 0.0}))
    assert not is_correct(_sample(CODE, {"code": 0.5, "accuracy": 1.0}))  # fraction scoring: not all passed
    assert is_correct(_sample(COUNTDOWN, {"countdown": 1.0, "accuracy": 0.0}))
    assert not is_correct(_sample(MATH, {"code": 1.0}))


def test_step_accuracy_metric_uses_each_rows_reward():
    from r1mega.trainer.samples import rollout_metrics

    samples = [_sample(MATH, {"accuracy": 1.0, "format": 1.0}), _sample(CODE, {"code": 0.0, "accuracy": 1.0}),
               _sample(COUNTDOWN, {"countdown": 1.0})]
    assert rollout_metrics(samples)["acc/mean"] == 2 / 3


def test_rejection_auto_judges_per_row():
    auto, fixed = RejectionConfig(), RejectionConfig(correctness_reward="accuracy")
    assert (auto.judge(CODE), auto.judge(MATH), fixed.judge(CODE)) == ("code", "accuracy", "accuracy")
