"""Asynchronous, disaggregated RL (rollout.mode=async) in real processes: rollout ranks that only
generate (vLLM) and trainer ranks that only train (Megatron), weights sent over a gloo group.

* 1 rollout + 1 trainer rank with max_staleness 0 reproduces the colocated synchronous loop:
  every step's metrics equal, and the engine's logprobs equal the trainer's after each transfer.
* 2 + 2 ranks with max_staleness 1: every batch lags by exactly one update once the pipeline is
  full, never more; SIGKILLed after its step-2 checkpoint and resumed (run.resume=auto), the
  batches the rollout ranks had finished come back from the checkpoint and every prompt of the
  run's 6 steps is trained exactly once (the run's rollout records, run.log_rollouts).
* 1 trainer rank + 2 rollout ranks holding one engine of rollout TP 2: the weights reach both
  shards; the engine ends equal to the exported policy.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.dist import REPO, free_port, tiny_rl_assets, torchrun

WORKER = os.path.join(REPO, "tests", "workers", "async_run.py")
pytestmark = [pytest.mark.multiproc, pytest.mark.vllm, pytest.mark.slow]
# a quarter of the vocabulary stops a response: lengths from 1 to the 12-token limit
STOPS = "rollout.stop_token_ids=[" + ",".join(str(i) for i in range(0, 512, 4)) + "]"
NOT_COMPARED = ("time/", "perf/", "sync/", "ts", "async/", "offpolicy/")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return tiny_rl_assets(tmp_path_factory.mktemp("async"), model_seed=3, data_seed=0)


def _steps(out):
    from r1mega.logging.metrics import read_metrics
    return {int(m["step"]): m for m in read_metrics(os.path.join(out, "run")) if "actor/loss" in m}


def _result(out):
    with open(os.path.join(out, "result.json")) as f:
        result = json.load(f)
    assert result["error"] is None, result["error"]
    return result


def test_one_plus_one_with_staleness_0_is_the_synchronous_loop(assets, tmp_path):
    model, data = assets
    common = (STOPS, "run.steps=3", "run.save_every=0")
    torchrun(WORKER, str(tmp_path / "sync"), model, data, *common, nproc=1, timeout=600)
    torchrun(WORKER, str(tmp_path / "async"), model, data, *common, "rollout.mode=async", "parallel.rollout_ranks=1",
             "rollout.max_staleness=0", nproc=2, timeout=600)
    _result(tmp_path / "sync"), _result(tmp_path / "async")
    sync, asyn = _steps(tmp_path / "sync"), _steps(tmp_path / "async")
    assert sorted(sync) == sorted(asyn) == [1, 2, 3]
    for step in (1, 2, 3):
        keys = [k for k in sync[step] if not k.startswith(NOT_COMPARED)]
        assert {"actor/loss", "actor/grad_norm", "reward/mean", "response/len_mean",
                "rollout/logprob_diff_max"} <= set(keys) <= set(asyn[step])
        # the same samples (engine seeds, versions, prompts), trained by the same arithmetic: bit-equal
        assert {k: asyn[step][k] for k in keys} == {k: sync[step][k] for k in keys}
        # the engine generated with exactly the weights sent after the previous step
        assert asyn[step]["rollout/logprob_diff_max"] < 1e-4
        assert asyn[step]["offpolicy/staleness_max"] == 0
    with open(tmp_path / "async" / "engine.json") as f:
        engine = json.load(f)
    assert engine["engine_version"] == 3 and engine["engine_diff"] < 1e-4  # after the last transfer


def test_one_trainer_and_one_tp2_engine_on_two_rollout_ranks(assets, tmp_path):
    """Rollout TP 2 (the engine's layout differs from the trainer's TP 1): every rollout rank gets
    the whole tensors, vLLM's loaders cut its shard; the engine ends equal to the exported policy."""
    model, data = assets
    out = tmp_path / "tp2"
    torchrun(WORKER, str(out), model, data, STOPS, "run.steps=3", "run.save_every=0", "rollout.mode=async",
             "parallel.rollout_ranks=2", "parallel.rollout_tensor=2", "rollout.max_staleness=1", nproc=3, timeout=600)
    _result(out)
    steps = _steps(out)
    assert sorted(steps) == [1, 2, 3]
    assert [steps[n]["offpolicy/staleness_max"] for n in (1, 2, 3)] == [0, 1, 1]
    assert all(steps[n]["reward/mean"] == steps[n]["reward/mean"] for n in steps)  # scored (no NaN)
    with open(out / "engine.json") as f:
        engine = json.load(f)
    assert engine["engine_tp"] == 2 and engine["engine_version"] == 3 and engine["engine_diff"] < 1e-4


def _launch(out, model, data, *overrides, nproc):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", WORKER, str(out), model, data, *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _kill_all(out):
    """SIGKILL torchrun and every rank of the run writing to ``out`` (torchrun starts its workers in
    sessions of their own: killing its process group would leave them running)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if WORKER in cmd and str(out) in cmd:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_two_plus_two_bounded_staleness_survives_sigkill(assets, tmp_path):
    import torch

    from r1mega.data.sampler import PromptSampler
    from r1mega.logging.rollouts import read_rollouts

    model, data = assets
    out = tmp_path / "run2x2"
    common = (STOPS, "run.steps=6", "run.save_every=2", "run.keep_last=3", "run.log_rollouts=true",
              "rollout.mode=async", "parallel.rollout_ranks=2", "rollout.max_staleness=1")
    ckpt = out / "run" / "checkpoints" / "step_000002"
    proc = _launch(out, model, data, *common, nproc=4)
    deadline = time.time() + 600
    while not ckpt.exists():  # committed (renamed into place): killed while step 3 runs
        assert proc.poll() is None, "the run ended before its step-2 checkpoint"
        assert time.time() < deadline, "no step-2 checkpoint within 600 s"
        time.sleep(0.02)
    _kill_all(out)
    proc.wait()
    saved = torch.load(ckpt / "ranks" / "rank_00000.pt", weights_only=False)["extra"]["async_batches"]
    assert "3" in saved  # batch 3 was finished (generated with version 1) when step 2 was saved

    proc = torchrun(WORKER, str(out), model, data, *common, "run.resume=auto", nproc=4, timeout=600)
    assert f"queued again {len(saved)} finished batches from the checkpoint" in proc.stdout + proc.stderr
    _result(out)
    steps = _steps(out)
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]
    for n, m in steps.items():
        assert m["offpolicy/staleness_max"] <= 1                      # the bound: version n-1 vs the batch's
        assert m["offpolicy/staleness_mean"] == (0 if n == 1 else 1)  # the pipeline runs one step ahead
    with open(out / "engine.json") as f:
        engine = json.load(f)
    assert engine["engine_version"] == 6 and engine["engine_diff"] < 1e-4

    rows = read_rollouts(str(out / "run"))
    assert sorted(rows) == [1, 2, 3, 4, 5, 6]
    for n in map(int, saved):      # restored batches: the very samples finished before the kill
        restored = [s for share, _ in saved[str(n)] for s in share]
        assert [r["response_ids"] for r in rows[n]] == [s["response_ids"] for s in restored]
    # every prompt the sampler gives 6 steps, trained exactly once, G=4 samples each
    with open(data) as f:
        questions = [json.loads(line)["question"] for line in f]
    sampler = PromptSampler(len(questions), 4, dp_rank=0, dp_size=1, seed=1234, shuffle=True)
    for n in range(1, 7):
        batch = [questions[i] for i in sampler.next_global_batch()]
        assert len(rows[n]) == 16 and len(set(batch)) == 4
        for q in batch:
            assert sum(r["prompt"].strip().endswith(q) for r in rows[n]) == 4, (n, q, [r["prompt"] for r in rows[n]])
