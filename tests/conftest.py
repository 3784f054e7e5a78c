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


def pytest_collection_modifyitems(config, items):
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
