"""Rule rewards as plain functions: format, accuracy, language consistency, length, overlong."""

from __future__ import annotations

import pickle

import pytest

from r1mega.config.base import ConfigError, from_dict
from r1mega.rewards import REWARDS, RewardConfig, RewardResult
from r1mega.rewards.format import lenient_format, strict_format
from r1mega.rewards.language import language_share, script_units
from r1mega.rewards.length import linear_length_score, soft_overlong_penalty

CFG = RewardConfig()


def run(name, text, answer=None, meta=None, **cfg):
    res = REWARDS[name](text, answer, meta or {}, RewardConfig(**cfg))
    assert isinstance(res, RewardResult) and isinstance(res.info, dict)
    return res.score


def test_registry_names_and_pickling():
    assert {"accuracy", "format", "language", "length", "overlong"} <= set(REWARDS)
    for fn in REWARDS.values():
        assert pickle.loads(pickle.dumps(fn)) is fn
    assert pickle.loads(pickle.dumps(CFG)) == CFG


@pytest.mark.parametrize("text,strict,lenient", [
    ("<think>\nadd 2 and 2\n</think>\nThe answer is \\boxed{4}.", 1, 1),
    ("<think>reason</think>4", 1, 1),
    ("  <think>reason</think>\n\n4  ", 1, 1),
    ("Sure! <think>reason</think> 4", 0, 1),
    ("reason without an opening tag</think> 4", 0, 1),
    ("<think>a</think><think>b</think> 4", 0, 1),
    ("<think>reason</think>", 0, 0),
    ("<think>reason</think>   \n", 0, 0),
    ("<think>   </think> 4", 0, 0),
    ("<think>reason never closed. 4", 0, 0),
    ("just 4", 0, 0),
])
def test_format_modes(text, strict, lenient):
    assert strict_format(text)[0] == bool(strict)
    assert lenient_format(text)[0] == bool(lenient)
    assert run("format", text, format_mode="strict") == strict
    assert run("format", text, format_mode="lenient") == lenient


def test_format_prefilled_think_and_answer_tags():
    assert run("format", "reasoning here</think> 4", think_prefilled=True) == 1.0
    assert run("format", "reasoning here</think> 4") == 0.0
    assert run("format", "reasoning</think> 4", meta={"think_prefilled": True}) == 1.0
    tagged = "<think>r</think> <answer>4</answer>"
    assert run("format", tagged, answer_tags=True) == 1.0
    assert run("format", "<think>r</think> 4", answer_tags=True) == 0.0
    assert run("format", "<think>r</think> <answer> </answer>", answer_tags=True) == 0.0
    assert run("format", "<think>r</think> x <answer>4</answer>", answer_tags=True, format_mode="lenient") == 1.0


@pytest.mark.parametrize("text,answer,score", [
    ("<think>2+2=4, so 4</think> The answer is \\boxed{4}.", "4", 1.0),
    ("<think>it is 5</think> \\boxed{4}", "4", 1.0),
    ("<think>surely \\boxed{4}</think> \\boxed{5}", "4", 0.0),     # only the text after </think> counts
    ("<think>\\boxed{4} ... still thinking", "4", 0.0),            # reasoning never closed: no answer
    ("Natalia sold 24 clips.\n#### 72", "72", 1.0),                 # GSM8K answer format, no think block
    ("The answer is $\\dfrac{1}{2}$.", "0.5", 1.0),
    ("The answer is 0.49.", "0.5", 0.0),
    ("<think>x</think> \\boxed{4}", None, 0.0),
])
def test_accuracy(text, answer, score):
    assert run("accuracy", text, answer) == score


def test_accuracy_extraction_config_and_info():
    text = "<think>r</think> I think 3, the answer is 7"
    assert run("accuracy", text, "7") == 1.0
    assert run("accuracy", text, "7", extract_order=["last_number"]) == 1.0
    assert run("accuracy", text, "3", extract_order=["boxed"]) == 0.0
    assert run("accuracy", "blah 3 </think> 7", "3", extract_after_think=False, extract_order=["answer_is", "last_number"]) == 0.0
    res = REWARDS["accuracy"]("<think>r</think> \\boxed{12}", "12", {}, CFG)
    assert res.info["pred"] == "12"


def test_script_units_words_and_chars():
    assert script_units("hello world") == {"latin": 2}
    assert script_units("hello world", "char") == {"latin": 10}
    assert script_units("我们计算 x plus y") == {"han": 4, "latin": 1}       # x, y: variables, skipped
    assert script_units("Пусть $x^2 = \\frac{a}{b}$ тогда") == {"cyrillic": 2}   # math and LaTeX removed
    assert script_units("12 + 7 = 19 !") == {}


def test_language_share_and_reward():
    share, _ = language_share("we add two numbers 我们", "en")
    assert share == pytest.approx(4 / 6)
    assert language_share("we add two numbers 我们", "zh")[0] == pytest.approx(2 / 6)
    assert language_share("we add two numbers 我们", "en", "char")[0] == pytest.approx(15 / 17)
    text = "<think>首先 we compute the sum</think> The answer is 4"
    assert run("language", text, language="en") == pytest.approx(4 / 6)          # CoT only
    assert run("language", text, meta={"language": "zh"}) == pytest.approx(2 / 6)
    assert run("language", "<think>1+1=2</think> 2") == 0.0
    assert run("language", "<think>Это просто</think>", language="ru") == 1.0
    with pytest.raises(ValueError, match="unknown language"):
        language_share("x", "klingon")


def test_length_scores_by_hand():
    assert linear_length_score(50, 100) == 0.0
    assert linear_length_score(50, 100, bonus=True) == 0.5
    assert linear_length_score(150, 100) == -0.5
    assert linear_length_score(500, 100, bonus=True) == -1.0
    assert run("length", "x", meta={"response_len": 150}, length_target=100) == -0.5
    assert run("length", "a b c d", length_target=2, length_bonus=True) == -1.0   # word count fallback


@pytest.mark.parametrize("length,expected", [(0, 0.0), (80, 0.0), (85, -0.25), (90, -0.5), (100, -1.0), (130, -1.0)])
def test_soft_overlong_penalty_by_hand(length, expected):
    assert soft_overlong_penalty(length, 100, 20, 1.0) == pytest.approx(expected)
    assert soft_overlong_penalty(length, 100, 20, 0.5) == pytest.approx(expected / 2)
    assert run("overlong", "x", meta={"response_len": length}, max_response_len=100, overlong_buffer=20) == pytest.approx(expected)


def test_soft_overlong_penalty_edges():
    assert soft_overlong_penalty(100, 100, 0, 1.0) == 0.0
    assert soft_overlong_penalty(101, 100, 0, 1.0) == -1.0
    with pytest.raises(ValueError):
        soft_overlong_penalty(5, 100, 200, 1.0)


@pytest.mark.parametrize("data,match", [
    ({"weights": {"acuracy": 1.0}}, "unknown reward 'acuracy'"),
    ({"weights": {}}, "empty"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"math_timeout_s": 20.0}, "math_timeout_s .20.0. must be >= 0 and below reward.timeout_s"),
    ({"num_workers": -1}, "num_workers"),
    ({"extract_order": ["boxed", "last"]}, "unknown mode 'last'"),
    ({"language": "xx"}, "language"),
    ({"overlong_buffer": 9000}, "overlong_buffer"),
])
def test_reward_config_validate(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(RewardConfig, data).validate()


def test_reward_config_choices_and_defaults():
    RewardConfig().validate()
    with pytest.raises(ConfigError, match="strict"):
        from_dict(RewardConfig, {"format_mode": "strct"})
