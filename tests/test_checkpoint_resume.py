"""Which checkpoint to resume from (pure Python: checkpoint directories made by hand)."""

import json
import os
import random
import re

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


# --------------------------------------------------------------------------- verified (format 2: manifest)
def fake_v2(root, step):
    """A format-2 checkpoint by hand: a few files of random bytes, meta, manifest, marker."""
    from r1mega.checkpoint.manifest import write_manifest

    d = os.path.join(root, f"step_{step:06d}")
    os.makedirs(os.path.join(d, "model"))
    os.makedirs(os.path.join(d, "ranks"))
    rng = random.Random(step)
    for rel, n in (("model/__0_0.distcp", 4099), ("ranks/rank_00000.pt", 517), ("scheduler.pt", 33)):
        with open(os.path.join(d, rel), "wb") as f:
            f.write(bytes(rng.randrange(256) for _ in range(n)))
    json.dump({"format": "r1mega-checkpoint", "version": 2, "step": step}, open(os.path.join(d, "meta.json"), "w"))
    write_manifest(d)
    open(os.path.join(d, "COMPLETE"), "w").write("{}")
    return d


def _flip(path, at):
    data = bytearray(open(path, "rb").read())
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage,reason", [
    (lambda d: _flip(os.path.join(d, "model", "__0_0.distcp"), 2000), r"model/__0_0\.distcp is damaged: its SHA-256"),
    (lambda d: os.remove(os.path.join(d, "ranks", "rank_00000.pt")), r"ranks/rank_00000\.pt is missing"),
    (lambda d: open(os.path.join(d, "scheduler.pt"), "r+b").truncate(20), r"scheduler\.pt is 20 bytes, manifest"),
    (lambda d: os.remove(os.path.join(d, "manifest.json")), r"manifest\.json is missing"),
    (lambda d: os.remove(os.path.join(d, "meta.json")), r"unreadable meta\.json"),
])
def test_damaged_latest_falls_back_with_a_warning_and_explicit_resume_names_the_file(tmp_path, caplog, damage,
                                                                                     reason):
    root = str(tmp_path)
    good = fake_v2(root, 3)
    latest = fake_v2(root, 4)
    assert resolve_resume(root, "auto") == latest
    damage(latest)
    with caplog.at_level("WARNING", logger="r1mega.checkpoint"):
        assert resolve_resume(root, "auto") == good
    assert re.search(rf"skipping {re.escape(latest)}: .*{reason}.*falling back", caplog.text), caplog.text
    with pytest.raises(CheckpointError, match=reason):
        resolve_resume(root, latest)
    assert resolve_resume(root, root) == good  # a directory of checkpoints: its newest intact one


def test_version_1_checkpoints_load_without_a_manifest(tmp_path):
    d = fake(str(tmp_path), 2)  # written before manifests existed
    assert resolve_resume(str(tmp_path), "auto") == d == resolve_resume(str(tmp_path), d)


def test_checkpoint_root_is_checked_before_any_work(tmp_path, caplog, monkeypatch):
    from r1mega.checkpoint import check_checkpoint_root
    from r1mega.checkpoint import training

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"checkpoint directory '.*a_file/checkpoints' is not writable"):
        check_checkpoint_root(str(blocker / "checkpoints"))
    root = str(tmp_path / "ckpts")
    check_checkpoint_root(root)  # created, written, probe removed
    assert os.listdir(root) == []
    fake_v2(root, 1)
    monkeypatch.setattr(training.shutil, "disk_usage", lambda p: type("U", (), {"free": 100})())
    with caplog.at_level("WARNING", logger="r1mega.checkpoint"):
        check_checkpoint_root(root)
    assert "has 0.00 GiB free; the last checkpoint took" in caplog.text
