"""Fault injection, in real processes on a tiny model: every way a run can lose work or fail
silently, and what r1mega does instead.

| probe | expected | test |
|---|---|---|
| SIGKILL during a run | resume from the last checkpoint gives the uninterrupted run's metrics | test_resume_after_sigkill_matches_uninterrupted |
| SIGTERM to torchrun (preemption) | checkpoint at the step boundary, clean exit, exact resume | test_sigterm_saves_at_the_step_boundary_and_resume_matches_uninterrupted |
| NaN rewards | steps skipped, then a clear stop with an intact checkpoint | test_nan_steps_are_skipped_then_stop_the_run |
| 4 bytes flipped in a model shard + resume with a new lr | auto resume falls back with a warning naming the file; the lr takes effect and is logged | test_flipped_bytes_fall_back_and_a_changed_lr_takes_effect |
| a checkpoint file deleted, meta.json deleted, ranks/rank_00001.pt deleted, bytes flipped (2 ranks) | auto falls back naming what is wrong; an explicit resume exits 2 naming the file | test_damaged_checkpoints_of_a_two_rank_run_fall_back_or_fail_by_name |
| SIGSTOP one of 3 ranks | every other rank stops within run.hang_timeout_s, naming the rank, stage and step | test_a_stopped_rank_stops_the_job_with_its_name_stage_and_step |
| a rank that never joins a collective | the collective fails at run.collective_timeout_s (Megatron's groups too) and lists each rank's stage and step | test_a_collective_timeout_fires_and_says_where_each_rank_is |
| bad prompts (empty or null question, non-UTF-8), truncated safetensors, config.json that does not match the weights, unwritable checkpoint dir, explicit resume of a damaged checkpoint | exit 2 before any training step, naming the file, 1-based line and key | test_bad_input_exits_2_before_any_step_naming_the_file |

(Each rank reading its own rank file after a change of layout, and the same damage on in-process
checkpoints, are in tests/test_checkpoint_training.py and tests/test_checkpoint_resume.py; the
other bad rows (non-string questions, null answers, every file type) in tests/test_data_prompts.py;
a config.json at odds with itself in tests/test_models_arch.py.)
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.dist import REPO, free_port, tiny_rl_assets, torchrun

WORKER = os.path.join(REPO, "tests", "workers", "rl_run.py")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]
COMMON = ["run.steps=4", "run.save_every=2", "run.keep_last=2", "run.export_hf=false", "data.prompts_per_step=4",
          "rollout.max_new_tokens=10"]
COMPARED = ("reward/mean", "response/len_mean", "actor/loss", "actor/grad_norm", "actor/pg_loss",
            "rollout/logprob_diff_max")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return tiny_rl_assets(tmp_path_factory.mktemp("resume"), model_seed=5, data_seed=1)


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


# --------------------------------------------------------------------------- damaged checkpoints
def _flip(path, at=None):
    data = bytearray(open(path, "rb").read())
    at = len(data) // 2 if at is None else at
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    open(path, "wb").write(bytes(data))


def _largest(directory):
    files = [os.path.join(r, f) for r, _, fs in os.walk(directory) for f in fs]
    return max(files, key=os.path.getsize)


def test_flipped_bytes_fall_back_and_a_changed_lr_takes_effect(assets, full, tmp_path):
    """The damage that used to load silently (NaN gradients, weights off by 5e37, exit 0), and the
    lr that used to stay at the checkpoint's value, in one resumed RL run."""
    model, data = assets
    out = tmp_path / "damaged"
    shutil.copytree(full, out)
    ckpts = out / "run" / "checkpoints"
    shard = _largest(ckpts / "step_000004" / "model")
    _flip(shard)
    proc = torchrun(WORKER, str(out), model, data, *COMMON, "run.resume=auto", "optimizer.lr=1e-4", nproc=1,
                    timeout=600)
    text = proc.stdout + proc.stderr
    rel = os.path.relpath(shard, ckpts / "step_000004")
    assert re.search(rf"skipping \S*step_000004: .*{re.escape(rel)} is damaged: its SHA-256.*falling back",
                     text), text[-3000:]
    assert "resumed from" in text and "step_000002 at step 2" in text
    assert "changed since the checkpoint: optimizer.lr 0.003 -> 0.0001" in text, text[-3000:]
    steps = _steps(out)
    assert sorted(steps) == [1, 2, 3, 4]
    assert [steps[s]["actor/lr"] for s in (1, 2)] == pytest.approx([3e-3] * 2)
    assert [steps[s]["actor/lr"] for s in (3, 4)] == pytest.approx([1e-4] * 2)
    assert all(steps[s]["actor/skipped"] == 0.0 for s in (3, 4))  # finite gradients: the damage was not loaded


def _sft_files(root):
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    model = build_tiny_qwen2(str(root / "model"), hidden=32, heads=2, kv_heads=2, layers=2, intermediate=64, seed=4)
    rows = [{"prompt": f"{a} plus {b} equals", "response": f" {a + b}"} for a in range(8) for b in range(8)]
    data = root / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model, str(data)


def _sft_args(model, data, out, *extra):
    config = os.path.join(out, "sft.yaml")
    with open(config, "w") as f:
        f.write(f"model:\n  hf_path: {model}\n")
    return ["-m", "r1mega.cli", "sft", config, f"sft.train={data}", f"run.output_dir={out}",
            "run.name=sft", "run.tensorboard=false", "run.export_hf=false", "sft.examples_per_step=8",
            "optimizer.lr=1e-3", "trainer.micro_batch_tokens=128", "model.max_seq_len=32", *extra]


def test_damaged_checkpoints_of_a_two_rank_run_fall_back_or_fail_by_name(tmp_path):
    from r1mega.checkpoint import CheckpointError, resolve_resume

    model, data = _sft_files(tmp_path)
    torchrun(*_sft_args(model, data, tmp_path, "run.steps=2", "run.save_every=1"), nproc=2, timeout=300)
    root = tmp_path / "sft" / "checkpoints"
    good, latest = str(root / "step_000001"), str(root / "step_000002")
    assert os.path.isfile(os.path.join(latest, "ranks", "rank_00001.pt"))
    damages = {
        "a model file deleted": (lambda d: os.remove(_largest(os.path.join(d, "model"))), r"model/\S+ is missing"),
        "meta.json deleted": (lambda d: os.remove(os.path.join(d, "meta.json")), r"unreadable meta\.json"),
        "rank 1's file deleted": (lambda d: os.remove(os.path.join(d, "ranks", "rank_00001.pt")),
                                  r"ranks/rank_00001\.pt is missing"),
        "4 bytes flipped": (lambda d: _flip(_largest(os.path.join(d, "model"))), r"model/\S+ is damaged: its SHA-256"),
    }
    for name, (damage, reason) in damages.items():
        case = tmp_path / name.replace(" ", "_").replace("'", "")
        shutil.copytree(root, case)
        damage(str(case / "step_000002"))
        with pytest.raises(CheckpointError, match=reason):
            resolve_resume(str(case), str(case / "step_000002"))
        assert resolve_resume(str(case), "auto") == str(case / "step_000001"), name
    # the same through the command, on 2 ranks: an explicit resume of the damaged checkpoint exits 2 naming
    # the file; auto falls back with a warning and trains on from step 1
    os.remove(os.path.join(latest, "ranks", "rank_00001.pt"))
    bad = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
                          "--master-addr=127.0.0.1", f"--master-port={free_port()}",
                          *_sft_args(model, data, tmp_path, "run.steps=3", f"run.resume={latest}")],
                         capture_output=True, text=True, timeout=300, env=_env(), cwd=REPO)
    assert bad.returncode != 0
    assert "config error: checkpoint" in bad.stderr and "ranks/rank_00001.pt is missing" in bad.stderr, bad.stderr[-3000:]
    assert "exitcode  : 2" in bad.stderr  # torchrun's report of the workers' exit code
    proc = torchrun(*_sft_args(model, data, tmp_path, "run.steps=3"), nproc=2, timeout=300)
    text = proc.stdout + proc.stderr
    assert re.search(r"skipping \S*step_000002: .*ranks/rank_00001\.pt is missing.*falling back", text), text[-3000:]
    assert f"resumed SFT from {good} at step 1" in text
    assert os.path.isdir(root / "step_000003")


# --------------------------------------------------------------------------- hung ranks
def _worker_pids(parent: int) -> dict[int, int]:
    """{RANK: pid} of torchrun's worker processes."""
    out = {}
    for pid in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split():
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        ranks = [int(e.split(b"=", 1)[1]) for e in env if e.startswith(b"RANK=")]
        if ranks:
            out[ranks[0]] = int(pid)
    return out


def _alive(pid: int) -> bool:
    """Running (not exited, not a zombie waiting for torchrun to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_stopped_rank_stops_the_job_with_its_name_stage_and_step(tmp_path):
    """SIGSTOP one of 3 ranks mid-run (what a hung rank looks like from outside): the job used to wait
    in silence for 300 s and more. With run.hang_timeout_s=8, the other two ranks print who stopped,
    where, and exit within the timeout (plus one heartbeat interval and slack)."""
    model, data = _sft_files(tmp_path)
    timeout = 8.0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=3", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", *_sft_args(model, data, tmp_path, "run.steps=100000", "sft.examples_per_step=6", "data.prompts_per_step=6",
                                                       f"run.hang_timeout_s={timeout}", "run.log_every=0")]
    proc = subprocess.Popen(cmd, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: [lines.append((time.monotonic(), ln)) for ln in proc.stdout], daemon=True)
    reader.start()
    metrics = tmp_path / "sft" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    stopped = None
    try:
        while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
            assert proc.poll() is None, "the run ended early:\n" + "".join(ln for _, ln in lines)[-3000:]
            assert time.monotonic() < deadline, "no step within 300 s"
            time.sleep(0.1)
        workers = _worker_pids(proc.pid)
        stopped = workers[1]
        os.kill(stopped, signal.SIGSTOP)
        t_stop = time.monotonic()
        while not any("HUNG RANK" in ln for _, ln in lines) and time.monotonic() < t_stop + 120:
            time.sleep(0.1)
        hung = [(t, ln) for t, ln in lines if "HUNG RANK" in ln]
        assert hung, "no hung-rank error within 120 s:\n" + "".join(ln for _, ln in lines)[-3000:]
        # detected within the timeout plus one heartbeat interval (timeout / 6) and scheduling slack
        assert hung[0][0] - t_stop < timeout + timeout / 6 + 5, hung[0][0] - t_stop
        # once the other ranks have exited (code 3), end the stopped one: it would ignore torchrun's
        # SIGTERM for 30 s
        end = time.monotonic() + 60
        while any(_alive(workers[r]) for r in (0, 2)) and time.monotonic() < end:
            time.sleep(0.1)
        os.kill(stopped, signal.SIGKILL)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    hung = [ln for _, ln in lines if "HUNG RANK" in ln]
    for rank in (0, 2):  # every rank that can still speak says it
        mine = [ln for ln in hung if f"[r1mega rank{rank}] HUNG RANK" in ln]
        assert mine, (rank, hung)
        assert re.search(r"rank 1 \(pid \d+ on \S+\) has sent no heartbeat for \d+ s \(run.hang_timeout_s=8\); it "
                         r"was last in stage '(train|checkpoint)' at step \d+", mine[0]), mine[0]
    assert "exitcode  : 3" in "".join(ln for _, ln in lines)  # the watchdog's exit code, as torchrun reports it


def test_a_collective_timeout_fires_and_says_where_each_rank_is(tmp_path):
    out = tmp_path / "probe.json"
    torchrun(os.path.join(REPO, "tests", "workers", "hang_probe.py"), str(out), nproc=2, timeout=120)
    result = json.loads(out.read_text())
    assert result["timeout"] and 2.5 < result["seconds"] < 10, result  # run.collective_timeout_s=3, on Megatron's TP group
    msg = result["message"]
    assert "rank 0: a collective waited longer than run.collective_timeout_s" in msg
    assert "rank 0: stage 'train' at step 3" in msg and "rank 1: stage 'reward' at step 3" in msg, msg


# --------------------------------------------------------------------------- bad input
def _bad_prompts(root, name, text: bytes):
    path = root / name
    path.write_bytes(text)
    return str(path)


def test_bad_input_exits_2_before_any_step_naming_the_file(assets, full, tmp_path):
    model, data = assets
    good = open(data, "rb").read().splitlines(keepends=True)
    row = json.loads(good[0])

    def prompts(name, bad_row: bytes):
        return _bad_prompts(tmp_path, name, b"".join(good[:2]) + bad_row + b"\n" + b"".join(good[2:]))

    def model_copy(name, edit):
        d = tmp_path / name
        shutil.copytree(model, d)
        edit(d)
        return str(d)

    def config_edit(**changes):
        def edit(d):
            c = json.loads((d / "config.json").read_text())
            c.update(changes)
            (d / "config.json").write_text(json.dumps(c))
        return edit

    def truncate(d):
        f = d / "model.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])

    blocked = tmp_path / "blocked"
    (blocked / "run").mkdir(parents=True)
    (blocked / "run" / "checkpoints").write_text("a file where the checkpoint directory goes")
    damaged = tmp_path / "damaged_full"
    shutil.copytree(full, damaged)
    _flip(_largest(damaged / "run" / "checkpoints" / "step_000004" / "model"))
    cases = {  # name: (overrides, expected message)
        "empty question": ([f"data.train={prompts('empty.jsonl', json.dumps({**row, 'question': ''}).encode())}"],
                           r"empty\.jsonl: line 3: 'question' \(data\.question_key\) is empty"),
        "null question": ([f"data.train={prompts('null.jsonl', json.dumps({**row, 'question': None}).encode())}"],
                          r"null\.jsonl: line 3: 'question' \(data\.question_key\) is null"),
        "non-UTF-8": ([f"data.train={prompts('latin1.jsonl', json.dumps(row).replace('?', 'é').encode('latin-1'))}"],
                      r"latin1\.jsonl: line 3: byte \d+ \(0x[0-9a-f]{2}\) is not UTF-8"),
        "truncated safetensors": ([f"model.hf_path={model_copy('cut', truncate)}"],
                                  r"cut/model\.safetensors: not a readable safetensors file"),
        "config.json: wrong width": ([f"model.hf_path={model_copy('wide', config_edit(intermediate_size=96))}"],
                                     r"wide: .*config\.json does not match the weights"),
        "config.json: too few layers": (
            [f"model.hf_path={model_copy('short', config_edit(num_hidden_layers=1, layer_types=['full_attention']))}"],
            r"short: the weights hold layers up to 1 but config\.json has num_hidden_layers=1"),
        "checkpoint dir not writable": ([f"run.output_dir={blocked}"],
                                        r"checkpoint directory '\S*blocked/run/checkpoints' is not writable"),
        "explicit resume of a damaged checkpoint": (
            [f"run.output_dir={damaged}", f"run.resume={damaged}/run/checkpoints/step_000004"],
            r"step_000004/model/\S+ is damaged: its SHA-256"),
    }
    base = [f"model.hf_path={model}", f"data.train={data}", "run.name=run", "data.template=plain",
            "data.max_prompt_len=64", "model.max_seq_len=128", "rollout.max_new_tokens=8",
            "rollout.kv_cache_memory_mb=32", "algorithm.group_size=4", "data.prompts_per_step=4",
            "reward.num_workers=0", "run.tensorboard=false", "run.steps=2"]
    procs = {}
    for i, (name, (overrides, _)) in enumerate(cases.items()):
        out = [] if any(o.startswith("run.output_dir=") for o in overrides) else [f"run.output_dir={tmp_path / f'out{i}'}"]
        procs[name] = subprocess.Popen([sys.executable, "-m", "r1mega.cli", "train", *base, *out, *overrides],
                                       env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if len(procs) % 4 == 0:  # a few at a time on a 2-core machine
            for p in procs.values():
                p.wait(timeout=300)
    for name, (overrides, expected) in cases.items():
        stdout, stderr = procs[name].communicate(timeout=300)
        assert procs[name].returncode == 2, (name, procs[name].returncode, stderr[-3000:])
        assert re.search(expected, stderr), (name, stderr[-3000:])
        assert "actor/loss" not in stdout + stderr and "Traceback" not in stderr, (name, stderr[-3000:])
    for i in range(len(cases)):  # no step ran: no metrics were written
        assert not (tmp_path / f"out{i}" / "run" / "metrics.jsonl").exists()
