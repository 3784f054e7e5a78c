"""The per-benchmark table of `r1mega eval` and the pooled `all` row, against hand-computed values."""

from __future__ import annotations

import pytest

from r1mega.config import ConfigError
from r1mega.eval.metrics import PromptResult, summarize
from r1mega.eval.report import as_json, format_table, pool, scoring_warning


def _bench():
    math = summarize([PromptResult(correct=[True, False], answers=["\\frac12", "2"], reference="0.5",
                                   response_lens=[10, 30]),
                      PromptResult(correct=[False, False], answers=["7", "7"], reference="5", response_lens=[20, 20])])
    gsm = summarize([PromptResult(correct=[True, True], answers=["18", "18.0"], reference="18", response_lens=[4, 6]),
                     PromptResult(correct=[True, False], answers=["3", "4"], reference="3", response_lens=[8, 8]),
                     PromptResult(correct=[False, False], answers=[None, "1"], reference="2", response_lens=[2, 2])])
    return {"math": math, "gsm8k": gsm}


def test_pool_weighs_benchmarks_by_prompts_and_lengths_by_samples():
    per = _bench()
    assert per["math"]["pass@1"] == pytest.approx(0.25) and per["gsm8k"]["pass@1"] == pytest.approx(0.5)
    assert per["math"]["cons@k"] == pytest.approx(0.5)  # "\frac12" (first of a 1-1 tie) is right, "7" wrong
    assert per["gsm8k"]["cons@k"] == pytest.approx(2 / 3)
    all_ = pool(per)
    assert all_["prompts"] == 5 and all_["samples"] == 10 and all_["k"] == 2
    assert all_["pass@1"] == pytest.approx((0.25 * 2 + 0.5 * 3) / 5)             # = 0.4, the mean over 5 prompts
    assert all_["cons@k"] == all_["maj@k"] == pytest.approx((0.5 * 2 + 2 / 3 * 3) / 5)  # 3 of 5
    assert all_["pass@k"] == pytest.approx((0.5 * 2 + 2 / 3 * 3) / 5)
    assert all_["mean_response_len"] == pytest.approx((10 + 30 + 20 + 20 + 4 + 6 + 8 + 8 + 2 + 2) / 10)
    assert "greedy_acc" not in all_


def test_table_has_a_row_per_benchmark_and_the_r1_columns():
    lines = format_table(_bench()).splitlines()
    assert lines[0].split() == ["benchmark", "prompts", "k", "pass@1", "cons@k", "pass@k", "mean", "len"]
    assert lines[1].split() == ["math", "2", "2", "25.0%", "50.0%", "50.0%", "20.0"]
    assert lines[2].split() == ["gsm8k", "3", "2", "50.0%", "66.7%", "66.7%", "5.0"]
    assert lines[3].split() == ["all", "5", "2", "40.0%", "60.0%", "60.0%", "11.0"]
    assert len({len(line) for line in lines}) == 1                              # fixed width
    assert len(format_table({"math": _bench()["math"]}).splitlines()) == 2      # one benchmark: no "all" row


def test_responses_whose_reward_failed_are_a_column_and_a_warning():
    per = _bench()
    assert scoring_warning(per) is None and "unscored" not in format_table(per)
    per["code"] = summarize([PromptResult(correct=[False, True, False, False], scoring_errors=3)])
    lines = format_table(per).splitlines()
    assert lines[0].split()[-1] == "unscored"
    assert [line.split()[-1] for line in lines[1:]] == ["0", "0", "3", "3"]
    warning = scoring_warning(per)
    assert "code: 3 of 4" in warning and "math" not in warning and "gsm8k" not in warning
    assert as_json(per)["all"]["scoring_errors"] == 3


def test_json_counts_are_integers():
    per = {name: {k: float(v) for k, v in m.items()} for name, m in _bench().items()}  # as evaluate_engine logs
    got = as_json(per)
    assert list(got) == ["benchmarks", "all"] and list(got["benchmarks"]) == ["math", "gsm8k"]
    assert got["benchmarks"]["math"]["prompts"] == 2 and isinstance(got["benchmarks"]["math"]["prompts"], int)
    assert got["all"]["samples"] == 10 and isinstance(got["all"]["k"], int)
    assert got["all"]["cons@k"] == pytest.approx(0.6)


def test_eval_data_arguments():
    from r1mega.cli import _benchmarks

    got, overrides = _benchmarks(["data/math500.jsonl", "aime=/d/aime_2024.parquet", "eval.k=4", "rollout.top_p=1"])
    assert got == {"math500": "data/math500.jsonl", "aime": "/d/aime_2024.parquet"}
    assert overrides == ["eval.k=4", "rollout.top_p=1"]
    with pytest.raises(ConfigError, match="two benchmarks named 'test'"):
        _benchmarks(["a/test.jsonl", "b/test.jsonl"])
    with pytest.raises(ConfigError, match="no benchmark file"):
        _benchmarks(["eval.k=4"])


def test_eval_parser_repeated_data_and_format():
    from r1mega.cli import build_parser

    args = build_parser().parse_args(["eval", "--model", "m", "--data", "math500.jsonl", "aime=a.parquet",
                                      "--data", "saved/gsm8k_test", "--format", "auto", "eval.k=4"])
    assert args.data == ["math500.jsonl", "aime=a.parquet", "saved/gsm8k_test"]
    assert args.format == "auto" and args.overrides == ["eval.k=4"]


def test_pool_weighs_the_held_out_reward_by_prompts():
    a = summarize([PromptResult(correct=[True, False], rewards=[2.0, 0.0], reward_parts=[{"format": 1.0}, {"format": 0.0}])])
    b = summarize([PromptResult(correct=[True], rewards=[1.0], reward_parts=[{"format": 1.0}]),
                   PromptResult(correct=[False], rewards=[-1.0], reward_parts=[{"format": 0.0}]),
                   PromptResult(correct=[False], rewards=[0.5], reward_parts=[{"format": 1.0}])])
    all_ = pool({"a": a, "b": b})
    assert all_["reward"] == pytest.approx((1.0 * 1 + 0.5 / 3 * 3) / 4)
    assert all_["reward/format"] == pytest.approx((0.5 * 1 + 2 / 3 * 3) / 4)
    assert "reward" not in pool({"a": a, "c": summarize([PromptResult(correct=[True])])})  # not in every row
