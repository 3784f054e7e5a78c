"""pass@k, pass@1 mean, cons@k (majority vote by equivalence class), summarize: hand-computed values."""

import math

import pytest

from r1mega.eval.metrics import PromptResult, majority_answer, majority_vote, pass_at_1_mean, pass_at_k, summarize


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    # 1 - C(7,2)/C(10,2) = 1 - 21/45
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    # 1 - C(3,3)/C(5,3) = 1 - 1/10
    assert pass_at_k(5, 2, 3) == pytest.approx(0.9)
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k
    assert pass_at_k(4, 4, 4) == 1.0
    for n, c, k in [(20, 7, 5), (64, 10, 8)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_pass_at_1_mean():
    assert pass_at_1_mean([[True, False, False, False], [True, True], [False]]) == pytest.approx((0.25 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        pass_at_1_mean([])


def test_majority_vote_groups_equivalent_answers():
    answers = ["1/2", "0.5", "3", "3", None, "\\frac{1}{2}"]
    assert majority_answer(answers) == "1/2"  # {1/2, 0.5, \frac12}: 3 votes beats {3}: 2
    assert majority_vote(answers, lambda a: a == "1/2")
    assert not majority_vote(answers, lambda a: a == "3")


def test_majority_tie_goes_to_first_seen():
    same = lambda a, b: a == b  # noqa: E731
    assert majority_answer(["7", "5", "5", "7"], same) == "7"
    assert majority_answer(["5", "7", "7", "5"], same) == "5"
    assert majority_answer([None, "", None], same) is None
    assert not majority_vote([None, None], lambda a: True)


def test_summarize_hand_values():
    results = [
        PromptResult(correct=[True, False, False, True], answers=["4", "5", "6", "4.0"], reference="4",
                     response_lens=[10, 20, 30, 40], greedy_correct=True),
        PromptResult(correct=[False, False, False, False], answers=["1", "2", "2", None], reference="3",
                     response_lens=[5, 5, 5, 5], greedy_correct=False),
        PromptResult(correct=[True, True, True, False], answers=["9", "9", "9", "8"], reference="9"),
    ]
    out = summarize(results)
    assert out["prompts"] == 3 and out["samples"] == 12 and out["k"] == 4
    assert out["pass@1"] == pytest.approx((0.5 + 0 + 0.75) / 3)
    assert out["pass@k"] == pytest.approx(2 / 3)  # k = n: any correct sample
    assert out["cons@k"] == pytest.approx(2 / 3)  # "4" (2 votes, 4.0 == 4), "2" wrong, "9"
    assert out["maj@k"] == out["cons@k"]           # the former name, still read by the recipes
    assert out["greedy_acc"] == pytest.approx(0.5)
    assert out["mean_response_len"] == pytest.approx(120 / 8)
    assert out["scoring_errors"] == 0
    bare = summarize([PromptResult(correct=[True, False])])
    assert set(bare) == {"prompts", "samples", "k", "pass@1", "pass@k", "scoring_errors"}
    failed = summarize([PromptResult(correct=[False, True, False], scoring_errors=2),
                        PromptResult(correct=[True, True, False], scoring_errors=1)])
    assert failed["scoring_errors"] == 3 and failed["pass@1"] == pytest.approx(0.5)


def test_summarize_held_out_reward_is_a_mean_over_prompts_of_sample_means():
    results = [
        PromptResult(correct=[True, False, False, False], rewards=[2.0, 1.0, 0.0, 1.0],
                     reward_parts=[{"accuracy": 1.0, "format": 1.0}, {"accuracy": 0.0, "format": 1.0},
                                   {"accuracy": 0.0, "format": 0.0}, {"accuracy": 0.0, "format": 1.0}]),
        PromptResult(correct=[False, False], rewards=[-0.5, 0.25],  # fewer samples: weighs as much
                     reward_parts=[{"accuracy": 0.0, "format": 0.5}, {"accuracy": 0.0}]),
    ]
    out = summarize(results)
    assert out["reward"] == pytest.approx((4.0 / 4 + (-0.25) / 2) / 2)
    assert out["reward/accuracy"] == pytest.approx((0.25 + 0.0) / 2)
    assert out["reward/format"] == pytest.approx((0.75 + 0.5) / 2)  # the second prompt's one score
    assert "reward" not in summarize([PromptResult(correct=[True])])


def test_cons_at_k_hand_computed_fractions_and_decimals():
    """k = 5 answers per problem; cons@k votes over the verifier's equivalence classes."""
    from r1mega.rewards.math_verify import is_equiv

    rows = [
        # {\frac{1}{2}, 0.5, \dfrac12} is one answer with 3 votes, against "2" and "3" with 1 each: right
        ("1/2", ["\\frac{1}{2}", "0.5", "2", "\\dfrac12", "3"]),
        # the string "4" is the most frequent (2); the class {\frac{6}{2}, 3, 3.0} has 3 votes: right
        ("3", ["4", "4", "\\frac{6}{2}", "3", "3.0"]),
        # {7, 7.0} wins with 2 votes (None and "" do not vote): wrong
        ("5", ["7", None, "", "7.0", "8"]),
    ]
    correct = [[a is not None and is_equiv(a, ref) for a in answers] for ref, answers in rows]
    assert correct == [[True, True, False, True, False], [False, False, True, True, True],
                       [False, False, False, False, False]]
    results = [PromptResult(correct=c, answers=answers, reference=ref) for c, (ref, answers) in zip(correct, rows)]
    assert [majority_answer(r.answers) for r in results] == ["\\frac{1}{2}", "\\frac{6}{2}", "7"]
    assert majority_answer(rows[1][1], lambda a, b: a == b) == "4"  # voting by string would pick the wrong one
    assert majority_answer(["3", "\\frac{1}{2}", "0.5", "3.0"]) == "3"  # a 2-2 tie: the class seen first
    out = summarize(results)
    assert out["k"] == 5 and out["prompts"] == 3 and out["samples"] == 15
    assert out["pass@1"] == (3 / 5 + 3 / 5 + 0 / 5) / 3 == pytest.approx(0.4)
    assert out["pass@k"] == pytest.approx((1 + 1 + 0) / 3)  # k = n = 5: a correct sample among the five
    assert out["cons@k"] == pytest.approx(2 / 3)            # right, right, wrong


def test_cons_at_k_votes_by_equivalence_class_not_by_string():
    """DeepSeek-R1's cons@k by hand: k = 5 answers per problem, written differently."""
    results = [
        # the string "4" is the most frequent (2), but {\frac{6}{2}, x = 3, 3.0} is one answer with 3 votes
        PromptResult(correct=[False, False, True, True, True], reference="3",
                     answers=["4", "4", "\\frac{6}{2}", "x = 3", "3.0"]),
        # an inequality and its interval are one answer: {x \le 2, (-\infty,2], -\infty < x \leq 2} 3 votes
        # against {x<2, x < 2} 2
        PromptResult(correct=[True, False, True, False, True], reference="(-\\infty, 2]",
                     answers=["x \\le 2", "x<2", "(-\\infty,2]", "x < 2", "-\\infty < x \\leq 2"]),
        # a wrong answer written three ways wins the vote; None does not vote
        PromptResult(correct=[True, False, False, False, False], reference="12",
                     answers=["12", "13", "13.0", "\\$13", None]),
    ]
    assert majority_answer(results[0].answers) == "\\frac{6}{2}"
    assert majority_answer(results[1].answers) == "x \\le 2"
    assert majority_answer(results[2].answers) == "13"
    out = summarize(results)
    assert out["k"] == 5
    assert out["pass@1"] == pytest.approx((3 / 5 + 3 / 5 + 1 / 5) / 3)
    assert out["pass@k"] == pytest.approx(1.0)       # k = n = 5: each problem has a correct sample
    assert out["cons@k"] == pytest.approx(2 / 3)     # right, right, wrong


class _ScriptedEngine:
    """One rollout engine (DP 1) that answers each prompt with a fixed list of responses, in turn."""

    tp_rank, dp_rank, dp_size, policy_version = 0, 0, 1, 0

    def __init__(self, responses: dict[str, list[str]]):
        self.responses = responses

    def generate(self, prompts, n=1, *, prompt_texts, expected_version=None, group_offset=0, **sampling):
        from r1mega.types import Sample

        return [Sample(prompt_ids=list(ids), response_ids=[1] * (3 + j), group_id=group_offset + g, finish_reason="stop",
                       prompt_text=text, response_text=self.responses[text][j])
                for g, (ids, text) in enumerate(zip(prompts, prompt_texts)) for j in range(n)]


def test_evaluate_engine_reports_the_held_out_training_reward():
    """reward = accuracy + 0.5 x format per sample, hand-scored; the weight-0 correctness reward
    eval adds to judge pass@1 does not change it."""
    from r1mega.config import load_config
    from r1mega.data.prompts import PromptRecord
    from r1mega.eval.evaluate import evaluate_engine

    right, wrong_fmt, bare = "<think>2+2=4</think> <answer>4</answer>", "<think>2+2=5</think> <answer>5</answer>", "4"
    engine = _ScriptedEngine({"a": [right, wrong_fmt, bare], "b": [bare, bare, wrong_fmt]})
    records = [PromptRecord(index=0, prompt_text="a", prompt_ids=[5, 6], answer="4", metadata={}),
               PromptRecord(index=1, prompt_text="b", prompt_ids=[5, 7], answer="4", metadata={})]
    cfg = load_config(None, ["reward.num_workers=0", "reward.weights={accuracy: 1.0, format: 0.5}", "eval.k=3",
                             "eval.greedy=false"])
    out = evaluate_engine(engine, records, cfg, prefix="")
    # per sample (accuracy, format): a = (1, 1), (0, 1), (1, 0); b = (1, 0), (1, 0), (0, 1)
    assert out["pass@1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert out["reward/accuracy"] == pytest.approx(2 / 3)
    assert out["reward/format"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert out["reward"] == pytest.approx(((1.5 + 0.5 + 1.0) / 3 + (1.0 + 1.0 + 0.5) / 3) / 2)
    only_format = evaluate_engine(engine, records, load_config(None, ["reward.num_workers=0", "eval.k=3",
                                                                      "reward.weights={format: 1.0}"]), prefix="")
    assert only_format["reward"] == pytest.approx(0.5) and "reward/accuracy" not in only_format
    assert only_format["pass@1"] == out["pass@1"]  # still judged by the accuracy reward, at weight 0
