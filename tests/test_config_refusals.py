"""Refusals that depend only on the config happen when it is loaded, naming the key; the config's
choices are the keys of the algorithm tables."""

import pytest
import yaml

from r1mega.config import ConfigError, load_config


@pytest.mark.parametrize("overrides, message", [
    # was refused by r1mega.trainer.loop.setup after the model and the engine were built
    (["algorithm.kl_in_reward=true", "algorithm.kl_coef=0.1"],
     r"algorithm.kl_in_reward=true \(with algorithm.kl_coef 0.1 > 0\) is not supported by the RL loop"),
    # was refused by r1mega.rollout.sampling.make_sampling_params at the first generation
    (["rollout.top_k=-2"], r"rollout.top_k \(-2\) must be -1 or 0 \(off\) or >= 1"),
    # was refused by r1mega.reward_model.model.layout_for when the reward model was loaded
    (["reward.model_path=rm_dir", "parallel.context=2"], r"reward.model_path \('rm_dir'\) needs parallel.context = 1"),
    # partial and async rollout (r1mega.rollout.partial, r1mega.rollout.async_rollout)
    (["rollout.partial_chunk=0"], r"rollout.partial_chunk \(0\) must be >= 1 new token per round"),
    (["rollout.partial_min_groups=1.5"], r"rollout.partial_min_groups \(1.5\) must be in \(0, 1\]"),
    (["rollout.partial_max_lag=-1"], r"rollout.partial_max_lag \(-1\) must be >= 0 steps"),
    (["rollout.max_staleness=-1"], r"rollout.max_staleness \(-1\) must be >= 0"),
    (["parallel.rollout_ranks=-1"], r"parallel.rollout_ranks \(-1\) must be >= 0"),
    (["rollout.mode=async"], r"rollout.mode=async with parallel.rollout_ranks=0: async rollout needs ranks of its own"),
    (["parallel.rollout_ranks=2"], r"rollout.mode=sync with parallel.rollout_ranks=2: .* only async uses them"),
    (["rollout.mode=async", "parallel.rollout_ranks=3", "parallel.rollout_tensor=2"],
     r"rollout.mode=async splits the rollout ranks into engines of parallel.rollout_tensor ranks: "
     r"parallel.rollout_ranks \(3\) must be a multiple of parallel.rollout_tensor \(2\)"),
    (["rollout.mode=async", "parallel.rollout_ranks=1", "data.eval=held.jsonl"],
     r"rollout.mode=async does not evaluate .* set data.eval=null \(got 'held.jsonl'\)"),
])
def test_refused_at_load_naming_the_key(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    tree: dict = {}                                 # the same from a YAML file: the error names the file
    for text in overrides:
        key, value = text.split("=")
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = yaml.safe_load(value)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=f"c.yaml: {message}"):
        load_config(path)


def test_what_stays_allowed():
    load_config(None, ["algorithm.kl_in_reward=true", "algorithm.kl_coef=0"])   # no KL at all: nothing to place
    load_config(None, ["rollout.top_k=0"])
    load_config(None, ["reward.model_path=rm_dir"])
    load_config(None, ["rollout.mode=async", "parallel.rollout_ranks=3", "rollout.max_staleness=0"])
    load_config(None, ["rollout.mode=partial", "rollout.partial_chunk=1", "rollout.partial_min_groups=0.01"])


def test_config_choices_are_the_algorithm_tables():
    """The config spells the names out (it loads without torch); they are the tables' keys."""
    from r1mega.algorithms import ADVANTAGES, AGGREGATIONS, KL_ESTIMATORS
    from r1mega.algorithms.config import ADVANTAGE_NAMES, KL_ESTIMATOR_NAMES, LOSS_AGG_NAMES, AlgorithmConfig
    assert set(ADVANTAGE_NAMES) == set(ADVANTAGES) and len(ADVANTAGE_NAMES) == len(ADVANTAGES)
    assert set(KL_ESTIMATOR_NAMES) == set(KL_ESTIMATORS) and len(KL_ESTIMATOR_NAMES) == len(KL_ESTIMATORS)
    assert set(LOSS_AGG_NAMES) == set(AGGREGATIONS) and len(LOSS_AGG_NAMES) == len(AGGREGATIONS)
    for key, table in (("advantage", ADVANTAGES), ("kl_estimator", KL_ESTIMATORS), ("loss_agg", AGGREGATIONS)):
        for name in table:
            assert getattr(load_config(None, [f"algorithm.{key}={name}"]).algorithm, key) == name
        with pytest.raises(ConfigError, match=f"algorithm.{key}"):
            load_config(None, [f"algorithm.{key}=nope"])
    assert AlgorithmConfig.__dataclass_fields__["advantage"].metadata["choices"] == ADVANTAGE_NAMES
