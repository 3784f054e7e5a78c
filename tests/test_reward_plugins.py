"""Reward plug-ins (reward.functions): imported and checked when the config is validated, scored
in this process and in the scorer's spawned pool workers."""

import textwrap

import pytest

from r1mega.config import ConfigError, load_config
from r1mega.rewards import RewardScorer
from r1mega.types import Sample

PLUGIN = textwrap.dedent('''
    from r1mega.rewards.result import RewardResult

    def exact_length(text, answer, meta, cfg):
        """1 when the response has exactly as many characters as the reference answer."""
        return float(len(text.strip()) == len(answer or ""))

    def with_info(text, answer, meta, cfg):
        return RewardResult(0.25 * text.count("step"), {"steps": text.count("step")})

    def two_args(text, answer):
        return 0.0

    NOT_A_FUNCTION = 3
''')


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "my_rewards"


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_a_plugin_is_scored_with_the_builtins_in_process_and_in_pool_workers(plugin):
    cfg = _cfg(f"reward.functions={{exact_length: {plugin}:exact_length, steps: {plugin}:with_info}}",
               "reward.weights={accuracy: 1.0, exact_length: 0.5, steps: 1.0}")
    texts = ["step one, step two: \\boxed{12}", "12"]
    for workers in (0, 1):  # in this process, then in a spawned worker that imports my_rewards by name
        cfg.reward.num_workers = workers
        samples = [Sample(prompt_ids=[1], response_ids=[2], group_id=0, response_text=t, answer="12") for t in texts]
        scorer = RewardScorer(cfg.reward)
        try:
            stats = scorer.score(samples)
        finally:
            scorer.close()
        assert stats["n_error"] == 0 and stats["n_timeout"] == 0
        first, second = (s.reward_breakdown for s in samples)
        assert (first["exact_length"], second["exact_length"]) == (0.0, 1.0)  # a bare float
        assert (first["steps"], second["steps"]) == (0.5, 0.0)                # a RewardResult
        assert samples[0].metadata["reward_info"]["steps"] == {"steps": 2}
        assert samples[0].reward == pytest.approx(first["accuracy"] + 0.5 * 0.0 + 1.0 * 0.5)
        assert samples[1].reward == pytest.approx(second["accuracy"] + 0.5 * 1.0)


@pytest.mark.parametrize("spec,match", [
    ("no_such_module_xyz:f", r"reward\.functions\.mine: module 'no_such_module_xyz' cannot be imported"),
    ("my_rewards:missing", r"reward\.functions\.mine: module 'my_rewards' has no attribute 'missing'"),
    ("my_rewards:NOT_A_FUNCTION", r"reward\.functions\.mine: 'my_rewards:NOT_A_FUNCTION' is a int"),
    ("my_rewards:two_args", r"reward\.functions\.mine: my_rewards:two_args has the signature \(text, answer\)"),
    ("my_rewards.exact_length", r"reward\.functions\.mine \('my_rewards\.exact_length'\) must be "
                                r"'package\.module:function'"),
])
def test_a_bad_plugin_fails_at_config_time_naming_the_key(plugin, spec, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(f"reward.functions={{mine: {spec}}}", "reward.weights={mine: 1.0}")


def test_plugins_cannot_shadow_builtins_and_weights_must_name_known_rewards(plugin):
    with pytest.raises(ConfigError, match=r"reward\.functions\.accuracy: 'accuracy' is a built-in reward"):
        _cfg(f"reward.functions={{accuracy: {plugin}:exact_length}}")
    with pytest.raises(ConfigError, match=r"unknown reward 'exact_length'.*or add it under reward\.functions"):
        _cfg("reward.weights={exact_length: 1.0}")


BATCH = textwrap.dedent('''
    CALLS = []

    def count_words(texts, answers, metas, cfg):
        CALLS.append(len(texts))
        return [len(t.split()) / 10 for t in texts]

    def wrong_length(texts, answers, metas, cfg):
        return [1.0]
''')


def test_a_batch_plugin_scores_all_samples_in_one_call_and_fails_as_a_whole(tmp_path, monkeypatch):
    (tmp_path / "my_batch.py").write_text(BATCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_batch

    cfg = _cfg("reward.batch_functions={words: my_batch:count_words, bad: my_batch:wrong_length}",
               "reward.weights={accuracy: 1.0, words: 1.0}", "reward.num_workers=0")
    samples = [Sample(prompt_ids=[1], response_ids=[2], group_id=0, response_text=t, answer="12")
               for t in ("so it is \\boxed{12}", "one two three four 12", "nothing")]
    scorer = RewardScorer(cfg.reward)
    scorer.score(samples)
    assert my_batch.CALLS == [3]  # one call for the whole list
    assert [s.reward_breakdown["words"] for s in samples] == pytest.approx([0.4, 0.5, 0.1])
    assert samples[0].reward == pytest.approx(samples[0].reward_breakdown["accuracy"] + 0.4)
    cfg.reward.weights = {"accuracy": 1.0, "bad": 1.0}
    scorer = RewardScorer(cfg.reward)
    stats = scorer.score(samples)
    assert stats["n_error"] == 3 and all(s.reward == cfg.reward.timeout_score for s in samples)
    with pytest.raises(ConfigError, match=r"reward\.batch_functions\.accuracy: 'accuracy' is already a reward"):
        _cfg("reward.batch_functions={accuracy: my_batch:count_words}")


def test_the_worked_example_loads_and_scores():
    from examples.reward_plugins import boxed_once, no_hedging

    cfg = _cfg("reward.functions={boxed_once: examples.reward_plugins:boxed_once, "
               "no_hedging: examples.reward_plugins:no_hedging}",
               "reward.weights={accuracy: 1.0, boxed_once: 0.2, no_hedging: 0.1}")
    assert boxed_once("\\boxed{1} or \\boxed{2}", "2", {}, cfg.reward).score == 0.0
    assert boxed_once("<think>a</think> \\boxed{2}", "2", {}, cfg.reward) == (1.0, {"boxes": 1})
    assert no_hedging("<think>maybe 3</think> It is 3.", "3", {}, cfg.reward) == 0.0
    assert no_hedging("<think>x</think> I think it is probably 3.", "3", {}, cfg.reward) == -1.0
