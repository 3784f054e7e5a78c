"""Config loading: YAML + overrides, and the documented errors for bad input."""

import pytest

from r1mega.config import Config, ConfigError, describe, load_config
from r1mega.config.sections import ParallelConfig
from r1mega.models.arch import ModelArch
from r1mega.parallel.layout import check_layout, padded_vocab


def _arch(**kw):
    base = dict(family="qwen2", vocab_size=1001, hidden_size=64, ffn_hidden_size=96, num_layers=6, num_heads=8,
                num_kv_heads=4, head_dim=8)
    base.update(kw)
    return ModelArch(**base)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rollout:\n  temperature: 0.7\nparallel:\n  tensor: 2\noptimizer:\n  lr: 1e-5\n")
    cfg = load_config(p, ["rollout.temperature=0.9", "run.steps=7", "reward.weights={accuracy: 1.0}"])
    assert cfg.rollout.temperature == 0.9 and cfg.parallel.tensor == 2 and cfg.run.steps == 7
    assert cfg.optimizer.lr == 1e-5  # "1e-5" in YAML is a string; the float field converts it
    assert cfg.reward.weights == {"accuracy": 1.0}


def test_typo_names_the_closest_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("rollout:\n  temprature: 0.7\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'rollout.temprature' \(did you mean \"temperature\"\?\)"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown key 'paralel' \(did you mean \"parallel\"\?\)"):
        load_config(None, ["paralel.tensor=2"])


def test_wrong_type_names_key_value_and_expected():
    with pytest.raises(ConfigError, match=r"parallel.tensor: expected an integer, got 'two' \(str\)"):
        load_config(None, ["parallel.tensor=two"])
    with pytest.raises(ConfigError, match=r"run.export_hf: expected true/false, got 3"):
        load_config(None, ["run.export_hf=3"])
    with pytest.raises(ConfigError, match=r"model.dtype: 'fp32' is not one of \['float32', 'bfloat16', 'float16'\]"):
        load_config(None, ["model.dtype=fp32"])


@pytest.mark.parametrize("parallel,world,message", [
    (dict(tensor=3), 6, r"num_attention_heads \(8\) must be a multiple of parallel.tensor \(3\)"),
    (dict(tensor=8), 8, r"num_key_value_heads \(4\) must be a multiple of parallel.tensor \(8\)"),
    (dict(pipeline=4), 4, r"num_hidden_layers \(6\) must be a multiple of parallel.pipeline \(4\)"),
    (dict(tensor=2, pipeline=2), 6, r"world size \(6\) must be a multiple of parallel.tensor x parallel.pipeline"),
    (dict(expert=2), 2, r"parallel.expert \(2\) > 1 needs an MoE model"),
    (dict(rollout_tensor=4), 2, r"parallel.rollout_tensor \(4\) must divide the world size \(2\)"),
])
def test_impossible_layouts(parallel, world, message):
    with pytest.raises(ConfigError, match=message):
        check_layout(ParallelConfig(**parallel), world, _arch())


def test_layout_resolves_sizes_and_vocab_padding():
    lay = check_layout(ParallelConfig(tensor=2, pipeline=3, rollout_tensor=4), 24, _arch())
    assert (lay.data, lay.rollout_data, lay.padded_vocab_size) == (4, 6, 1002)
    assert padded_vocab(1001, 4) == 1004 and padded_vocab(1000, 4) == 1000
    assert "TP 2 x PP 3" in lay.describe()


def test_cross_section_checks():
    cfg = load_config(None, ["rollout.max_new_tokens=4000"])  # fine for SFT / reward models: no engine
    with pytest.raises(ConfigError, match=r"data.max_prompt_len \(256\) \+ rollout.max_new_tokens \(4000\) exceeds"):
        cfg.check_rollout_lengths()  # what every engine-building command runs first
    with pytest.raises(ConfigError, match=r"sequence_parallel=true needs parallel.tensor > 1"):
        load_config(None, ["parallel.sequence_parallel=true"])
    cfg = load_config(None, ["data.prompts_per_step=6", "parallel.rollout_tensor=1"])
    with pytest.raises(ConfigError, match=r"data.prompts_per_step \(6\) must be a multiple of the trainer data-parallel size \(4\)"):
        cfg.validate(world_size=4)


def test_every_field_is_documented():
    rows = describe(Config)
    assert len(rows) > 60
    missing = [key for key, tp, _, help_ in rows if not help_.strip()]
    assert not missing, f"fields without help: {missing}"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
