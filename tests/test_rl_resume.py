"""Reliability of the RL loop: exact resume after SIGKILL and after a SIGTERM (preemption) save,
and NaN handling."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.dist import REPO, free_port, torchrun

WORKER = os.path.join(REPO, "tests", "workers", "rl_run.py")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]
COMMON = ["run.steps=4", "run.save_every=2", "run.keep_last=2", "run.export_hf=false", "data.prompts_per_step=4",
          "rollout.max_new_tokens=10"]
COMPARED = ("reward/mean", "response/len_mean", "actor/loss", "actor/grad_norm", "actor/pg_loss",
            "rollout/logprob_diff_max")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    root = tmp_path_factory.mktemp("resume")
    model = build_tiny_qwen2(str(root / "model"), heads=2, kv_heads=2, layers=2, seed=5)
    train, _ = make_splits("arithmetic", 32, 4, seed=1, ops=["+"], min_digits=1, max_digits=2)
    return model, write_jsonl(train, str(root / "train.jsonl"))


def _env():
    return dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONWARNINGS="ignore",
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(free_port()), PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _steps(run_dir):
    from r1mega.logging.metrics import read_metrics
    return {int(m["step"]): m for m in read_metrics(os.path.join(run_dir, "run")) if "actor/loss" in m}


@pytest.fixture(scope="module")
def full(assets, tmp_path_factory):
    """The uninterrupted run both resume tests compare against."""
    model, data = assets
    out = tmp_path_factory.mktemp("full")
    torchrun(WORKER, str(out), model, data, *COMMON, nproc=1, timeout=600)
    return out


def test_resume_after_sigkill_matches_uninterrupted(assets, full, tmp_path):
    model, data = assets
    killed = tmp_path / "killed"

    # The same run, SIGKILLed as soon as the step-2 checkpoint is committed.
    ckpt = killed / "run" / "checkpoints" / "step_000002"
    proc = subprocess.Popen([sys.executable, WORKER, str(killed), model, data, *COMMON], env=_env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while not ckpt.exists():
        assert proc.poll() is None, "the run ended before its step-2 checkpoint"
        assert time.time() < deadline, "no checkpoint within 600 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    from r1mega.checkpoint import find_latest_checkpoint
    assert find_latest_checkpoint(str(killed / "run" / "checkpoints")) is not None

    torchrun(WORKER, str(killed), model, data, *COMMON, "run.resume=auto", nproc=1, timeout=600)
    a, b = _steps(full), _steps(killed)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    # one process, one thread count, the same weights, optimizer state, data and sampling seeds after the
    # resume: the same arithmetic, so the same numbers (metrics.jsonl's floats round-trip exactly)
    for step in (3, 4):
        for key in COMPARED:
            assert b[step][key] == a[step][key], (step, key, a[step][key], b[step][key])


def test_sigterm_saves_at_the_step_boundary_and_resume_matches_uninterrupted(assets, full, tmp_path):
    """What a preempted job sees: SIGTERM to torchrun (which forwards it to its workers and
    SIGKILLs them 30 s later). With no periodic checkpoints (run.save_every=0), the step in
    flight finishes, a checkpoint of it is saved, the run exits, and resuming from it gives the
    uninterrupted run's numbers."""
    model, data = assets
    out = tmp_path / "preempted"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", WORKER, str(out), model, data, *COMMON, "run.save_every=0",
           "run.save_every_minutes=0"]
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while 1 not in _steps_if_any(out):
        assert proc.poll() is None, "the run ended before its first step:\n" + proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no step within 600 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    log_text = proc.communicate(timeout=120)[0]
    with open(out / "result.json") as f:
        result = json.load(f)
    assert result["preempted"] == "SIGTERM", log_text[-3000:]
    assert "received SIGTERM: saving a checkpoint at the end of this step" in log_text
    from r1mega.checkpoint import find_latest_checkpoint, read_meta
    latest = find_latest_checkpoint(str(out / "run" / "checkpoints"))
    assert latest is not None, log_text[-3000:]
    stopped = read_meta(latest)["step"]
    assert 1 <= stopped < 4 and max(_steps(out)) == stopped  # no step after the one in flight
    assert f"stopped by SIGTERM after step {stopped} of 4" in log_text

    torchrun(WORKER, str(out), model, data, *COMMON, "run.save_every=0", "run.resume=auto", nproc=1, timeout=600)
    a, b = _steps(full), _steps(out)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in range(stopped + 1, 5):
        for key in COMPARED:
            assert b[step][key] == a[step][key], (step, key, a[step][key], b[step][key])


def _steps_if_any(run_dir) -> dict:
    return _steps(run_dir) if os.path.isfile(os.path.join(run_dir, "run", "metrics.jsonl")) else {}


def test_nan_steps_are_skipped_then_stop_the_run(assets, tmp_path):
    model, data = assets
    torchrun(WORKER, str(tmp_path), model, data, "run.steps=6", "run.save_every=1", "run.max_bad_steps=2",
             "reward.weights={nan_reward: 1.0}", "test.nan_after=16", "data.prompts_per_step=4",
             "algorithm.group_size=4", nproc=1, timeout=600)
    with open(tmp_path / "result.json") as f:
        result = json.load(f)
    assert "2 consecutive steps with a non-finite loss or gradient" in result["error"]
    steps = _steps(tmp_path)
    assert steps[1]["actor/skipped"] == 0.0 and steps[2]["actor/skipped"] == 1.0
    from r1mega.checkpoint import find_latest_checkpoint, read_meta
    latest = find_latest_checkpoint(str(tmp_path / "run" / "checkpoints"))
    assert latest is not None and read_meta(latest)["step"] >= 1
