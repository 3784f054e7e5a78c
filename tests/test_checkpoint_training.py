"""Training checkpoints with Megatron's distributed optimizer over real gloo processes:
resume == uninterrupted run (bit-exact), a save that raises or is SIGKILLed midway leaves
the previous checkpoint latest and loadable, keep_last prunes after the commit, flipped bytes in a
shard make resume fall back (auto) or fail naming the file (explicit), a missing rank file is refused."""

import json
import os

import pytest

from r1mega.checkpoint import find_latest_checkpoint
from tests.dist import REPO, torchrun
from tests.hf_models import make_hf_model

KILL = os.path.join(REPO, "tests", "workers", "ckpt_kill.py")
TRAIN = os.path.join(REPO, "tests", "workers", "ckpt_train.py")


@pytest.mark.multiproc
def test_resume_exact_and_atomic_saves(tmp_path):
    path, _ = make_hf_model("qwen2", str(tmp_path), seed=21)
    killed = str(tmp_path / "killed")
    # 1 process: step 1 committed, then SIGKILL while step 2 is being written
    with pytest.raises(AssertionError, match="failed"):
        torchrun(KILL, killed, path, nproc=1, timeout=120)
    assert sorted(os.listdir(killed)) == ["step_000001", "step_000002.tmp"]
    assert os.path.isdir(os.path.join(killed, "step_000002.tmp", "model"))  # it died mid-save
    assert find_latest_checkpoint(killed) == os.path.join(killed, "step_000001")

    # 2 processes (DP=2, distributed optimizer): every check asserts inside the worker
    out, root = tmp_path / "out", str(tmp_path / "ckpts")
    out.mkdir()
    torchrun(TRAIN, str(out), root, path, killed, nproc=2, timeout=240)
    seen = json.load(open(out / "train.json"))
    assert seen["resume_max_diff"] == 0.0
    assert seen["after_keep_last"] == ["step_000003", "step_000004"]  # failed step-3 .tmp cleaned, 1-2 pruned
    assert seen["killed_latest"] == os.path.join(killed, "step_000001")
    assert seen["killed_after_resave"] == ["step_000001", "step_000002"]  # the dead .tmp was cleaned
    assert "step_000004" in seen["damaged_error"] and ".distcp is damaged" in seen["damaged_error"]
    assert "ranks/rank_00001.pt missing" in seen["rank_file_error"]
