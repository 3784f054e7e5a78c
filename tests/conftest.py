"""Shared test setup: CPU defaults and the markers' skip rules."""

import os

import torch

# Triton runs on CPU only in its interpreter; set it before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import pytest  # noqa: E402


def _have(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


# The longest files first (test seconds summed per file in a fresh-clone run on 2 cores, longest
# first): `scripts/test.sh` runs the suite on pytest-xdist workers one file per worker at a time
# (--dist loadfile, --no-loadscope-reorder so that this order holds), and a long file started last
# would run alone at the end.
SLOW_FIRST = ("test_fault_injection.py", "test_async_rl.py", "test_rl_loop.py", "test_cli.py",
              "test_trainer_parity.py", "test_code_rl.py", "test_moe_rl.py", "test_rollout_multiproc.py", "test_bench_partial.py",
              "test_r1_chain.py", "test_bench_gpu.py", "test_multinode.py", "test_moe_sync.py", "test_routing_replay.py", "test_learning.py",
              "test_models_hf.py", "test_wheel.py", "test_shard_sync.py", "test_bench_routing_replay.py", "test_sft_command.py", "test_moe_models.py",
              "test_sandbox_attacks.py", "test_moe_convert.py", "test_checkpoint_training.py", "test_tiny_default.py",
              "test_moe_training.py", "test_reward_model.py", "test_compat.py", "test_rejection.py",
              "test_rollout_engine.py", "test_kernels_aot.py", "test_tiny_seeds.py", "test_chain_seeds.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(SLOW_FIRST)))  # stable
    no_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    no_vllm = pytest.mark.skip(reason="needs vllm (install the cpu or gpu extra)")
    have_vllm = None
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "vllm" in item.keywords:
            if have_vllm is None:
                have_vllm = _have("vllm")
            if not have_vllm:
                item.add_marker(no_vllm)
