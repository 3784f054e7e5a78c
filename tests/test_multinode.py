"""Multi-node launch on one machine: two "nodes" (two torchrun launches of
examples/launch_multinode.sh, 2 processes each) join through the c10d rendezvous on localhost
and run GRPO steps of a tiny model as one world of 4: trainer TP 2 inside each node, DP 2
across the nodes, one TP 2 rollout engine per node. Also: the Slurm script derives the
rendezvous host from the allocation and starts one launcher per node."""

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.dist import REPO, free_port

LAUNCH = os.path.join(REPO, "examples", "launch_multinode.sh")
SBATCH = os.path.join(REPO, "examples", "slurm_r1mega.sbatch")


def _config(tmp_path):
    import yaml

    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    model = build_tiny_qwen2(str(tmp_path / "model"), heads=2, kv_heads=2, layers=2, seed=3)
    train, _ = make_splits("arithmetic", 32, 4, seed=0, ops=["+"], min_digits=1, max_digits=2)
    data = write_jsonl(train, str(tmp_path / "train.jsonl"))
    cfg = {
        "model": {"hf_path": model, "max_seq_len": 128},
        "parallel": {"tensor": 2, "rollout_tensor": 2},
        "rollout": {"max_new_tokens": 12, "kv_cache_memory_mb": 32},
        "algorithm": {"group_size": 4},
        "reward": {"weights": {"accuracy": 1.0, "language": 1.0}, "num_workers": 0},
        "optimizer": {"lr": 3e-3},
        "data": {"train": data, "template": "plain", "max_prompt_len": 64, "prompts_per_step": 4},
        "trainer": {"micro_batch_tokens": 256},
        "run": {"output_dir": str(tmp_path), "name": "run", "steps": 3, "tensorboard": False, "export_hf": False},
    }
    path = tmp_path / "tiny_2node.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _env(**extra):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONWARNINGS="ignore", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(extra)
    return env


@pytest.mark.multiproc
@pytest.mark.vllm
@pytest.mark.slow
def test_two_nodes_join_and_train(tmp_path):
    config = _config(tmp_path)
    port, rdzv_id = free_port(), f"r1mega-test-{uuid.uuid4().hex[:8]}"
    procs, logs = [], []
    for node in (0, 1):
        log = open(tmp_path / f"node{node}.log", "w+")
        env = _env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NNODES="2", NPROC_PER_NODE="2",
                   NODE_RANK=str(node), RDZV_ID=rdzv_id)
        procs.append(subprocess.Popen(["bash", LAUNCH, config], cwd=REPO, env=env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
        logs.append(log)
    deadline = time.monotonic() + 240
    try:
        codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:  # our own launches only: each torchrun agent leads its own session
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    outputs = []
    for log in logs:
        log.seek(0)
        outputs.append(log.read())
        log.close()
    detail = "\n".join(f"--- node {i} ---\n{out[-6000:]}" for i, out in enumerate(outputs))
    assert codes == [0, 0], f"exit codes {codes}\n{detail}"

    from r1mega.logging.metrics import read_metrics
    steps = [m for m in read_metrics(tmp_path / "run") if "actor/loss" in m]
    assert [int(m["step"]) for m in steps] == [1, 2, 3], detail
    # engine vs trainer logprobs of any policy of the run (3 Adam steps at lr 3e-3 from the tiny model,
    # max_seq_len 128): two fp32 forwards, tests/numerics.py (~5e-2: init std 0.2, logits up to ~30)
    from tests.numerics import run_logprob_bound
    tol = run_logprob_bound(str(tmp_path / "model"), 3, lr=3e-3, seq=128)
    for m in steps:
        assert math.isfinite(m["actor/loss"]) and math.isfinite(m["actor/grad_norm"]), m
        assert m["rollout/logprob_diff_max"] <= tol, (tol, m)  # engines on both nodes run the synced policy
    # one world of 4 over the two launches: the final checkpoint records the layout and has 4 rank files
    ckpt = tmp_path / "run" / "checkpoints" / "step_000003"
    meta = json.loads((ckpt / "meta.json").read_text())
    assert {k: meta["layout"][k] for k in ("world_size", "tensor", "data")} == {"world_size": 4, "tensor": 2, "data": 2}
    assert sorted(f.name for f in (ckpt / "ranks").iterdir()) == [f"rank_{r:05d}.pt" for r in range(4)]


def test_slurm_script_starts_one_launcher_per_node(tmp_path):
    """sbatch script with stand-ins for scontrol and srun: the rendezvous host is the first
    node of the allocation and each node runs launch_multinode.sh with the config and overrides."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && printf "gpu-a17\\ngpu-a18\\n"\n')
    # srun runs its command once per node, as Slurm would, with SLURM_NODEID set; here the
    # command's launcher is replaced by one that prints what it would start.
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\n'
                                  'for n in 0 1; do SLURM_NODEID=$n "$@"; done\n')
    fake_repo = tmp_path / "repo"
    (fake_repo / "examples").mkdir(parents=True)
    (fake_repo / "examples" / "launch_multinode.sh").write_text(
        'echo "node=$NODE_RANK master=$MASTER_ADDR:$MASTER_PORT nnodes=$NNODES nproc=$NPROC_PER_NODE '
        'rdzv=$RDZV_ID omp=$OMP_NUM_THREADS args=$*"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-a[17-18]",
               SLURM_JOB_ID="4242", SLURM_JOB_NUM_NODES="2", SLURM_GPUS_ON_NODE="8", SLURM_CPUS_PER_TASK="96",
               SLURM_SUBMIT_DIR=str(fake_repo))
    env.pop("MASTER_PORT", None)
    env.pop("OMP_NUM_THREADS", None)
    r = subprocess.run(["bash", SBATCH, "cfg.yaml", "parallel.tensor=8", "run.steps=5"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("node=")]
    port = 20000 + 4242 % 20000
    assert lines == [f"node={n} master=gpu-a17:{port} nnodes=2 nproc=8 rdzv=4242 omp=12 "
                     f"args=cfg.yaml parallel.tensor=8 run.steps=5" for n in (0, 1)], r.stdout


def test_launcher_needs_the_rendezvous_host():
    env = _env()
    env.pop("MASTER_ADDR", None)
    r = subprocess.run(["bash", LAUNCH, "cfg.yaml"], env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "set MASTER_ADDR" in r.stderr
