"""Which checkpoint to resume from (pure Python: checkpoint directories made by hand)."""

import json
import os

import pytest

from r1mega.checkpoint import CheckpointError, find_latest_checkpoint, prune_checkpoints, resolve_resume


def fake(root, step, complete=True, meta=True):
    d = os.path.join(root, f"step_{step:06d}")
    os.makedirs(d)
    if meta:
        json.dump({"format": "r1mega-checkpoint", "version": 1, "step": step}, open(os.path.join(d, "meta.json"), "w"))
    if complete:
        open(os.path.join(d, "COMPLETE"), "w").write("{}")
    return d


def test_latest_skips_tmp_incomplete_and_unreadable(tmp_path):
    root = str(tmp_path)
    assert find_latest_checkpoint(root) is None
    assert find_latest_checkpoint(os.path.join(root, "missing")) is None
    fake(root, 5)
    good = fake(root, 12)
    fake(root, 30, complete=False)              # crashed before the commit
    fake(root, 40, meta=False)                   # marker but no metadata
    os.makedirs(os.path.join(root, "step_000050.tmp"))
    bad = fake(root, 60)
    open(os.path.join(bad, "meta.json"), "w").write("{not json")
    assert find_latest_checkpoint(root) == good
    assert resolve_resume(root, "auto") == good
    assert resolve_resume(root, "never") is None
    assert resolve_resume(root, good) == good
    assert resolve_resume(root, root) == good   # a directory of checkpoints: its newest valid one


def test_resume_errors_are_clear(tmp_path):
    root = str(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_resume(root, os.path.join(root, "step_000099"))
    partial = fake(root, 7, complete=False)
    with pytest.raises(CheckpointError, match="incomplete"):
        resolve_resume(root, partial)
    unreadable = fake(root, 8)
    open(os.path.join(unreadable, "meta.json"), "w").write("")
    with pytest.raises(CheckpointError, match="unreadable meta.json"):
        resolve_resume(root, unreadable)
    with pytest.raises(CheckpointError, match="none of its 2 checkpoint"):
        resolve_resume(None, root)
    assert resolve_resume(os.path.join(root, "nothing_yet"), "auto") is None


def test_prune_keeps_newest_valid(tmp_path):
    root = str(tmp_path)
    for s in (1, 2, 3, 4):
        fake(root, s)
    fake(root, 5, complete=False)
    assert [os.path.basename(p) for p in prune_checkpoints(root, 2)] == ["step_000001", "step_000002"]
    assert sorted(os.listdir(root)) == ["step_000003", "step_000004", "step_000005"]
    with pytest.raises(ValueError, match="keep_last"):
        prune_checkpoints(root, 0)
