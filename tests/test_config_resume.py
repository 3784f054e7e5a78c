"""Config changes at resume: listed key by key, refused by name where they cannot work."""

import pytest

from r1mega.config import ConfigError, load_config, to_dict
from r1mega.config.resume import REFUSED_AT_RESUME, check_resume, describe_changes, resume_changes


def test_changes_are_listed_key_by_key():
    saved = to_dict(load_config(None, ["optimizer.lr=3e-3", "run.steps=10"]))
    now = to_dict(load_config(None, ["optimizer.lr=1e-4", "run.steps=20", "optimizer.clip_grad=0.5",
                                     "run.resume=never"]))
    changes = resume_changes(saved, now)
    assert changes == [("optimizer.clip_grad", 1.0, 0.5), ("optimizer.lr", 3e-3, 1e-4), ("run.steps", 10, 20)]
    assert describe_changes(changes)[1] == "changed since the checkpoint: optimizer.lr 0.003 -> 0.0001"
    check_resume(changes, "ckpt/step_000010")  # all of these may change
    assert resume_changes(saved, saved) == []


def test_a_key_only_one_side_has_counts():
    assert resume_changes({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == [("a.c", None, 2)]


@pytest.mark.parametrize("key,value", [("run.seed", 7), ("data.prompts_per_step", 3), ("data.shuffle", False)])
def test_changes_that_would_reorder_the_prompts_are_refused_by_name(key, value):
    saved = to_dict(load_config(None, []))
    now = to_dict(load_config(None, [f"{key}={value}", "optimizer.lr=1e-3"]))
    with pytest.raises(ConfigError, match=rf"cannot resume from ckpt/step_000004 with {key} .* -> {value!r} "
                                          rf"\({REFUSED_AT_RESUME[key]}\)\. Set the old value"):
        check_resume(resume_changes(saved, now), "ckpt/step_000004")
