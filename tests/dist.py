"""Launch real multi-process runs (torchrun, gloo) from tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_rl_assets(root, *, model_seed: int, data_seed: int) -> tuple[str, str]:
    """A random tiny Qwen2 (2 layers, 2 heads) and 32 one- or two-digit additions as train.jsonl
    under ``root``: (model directory, data path), the inputs of the RL loop's process tests."""
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    model = build_tiny_qwen2(os.path.join(root, "model"), heads=2, kv_heads=2, layers=2, seed=model_seed)
    train, _ = make_splits("arithmetic", 32, 4, seed=data_seed, ops=["+"], min_digits=1, max_digits=2)
    return model, write_jsonl(train, os.path.join(root, "train.jsonl"))


def torchrun(script: str, *args: str, nproc: int = 2, timeout: float = 300, env: dict | None = None):
    """Run ``script`` under ``torch.distributed.run`` with ``nproc`` local processes.

    Raises AssertionError with the processes' output when the run fails or times out.
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", script, *args]
    full_env = dict(os.environ)
    full_env.update({"PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"})
    # one thread per process unless the caller chose a count (OMP_NUM_THREADS in the environment: the
    # CPU-variant runs of the parity tests); torch.distributed.run would otherwise also default it to 1
    full_env.setdefault("OMP_NUM_THREADS", "1")
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{script} timed out after {timeout}s\n{e.stdout}\n{e.stderr}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-5000:]}\n{proc.stderr[-8000:]}")
    return proc
