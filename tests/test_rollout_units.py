"""Rollout pieces that need no engine: bucketing rule, parity metric, layout, prompt checks."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from r1mega.config.base import ConfigError
from r1mega.config.sections import RolloutConfig
from r1mega.rollout import check_prompts, iter_buckets, logprob_parity, rollout_layout
from r1mega.rollout.weight_sync import SyncStats
from r1mega.types import Sample


def _weights(sizes):
    return [(f"w{i}", torch.zeros(n, dtype=torch.float32)) for i, n in enumerate(sizes)]


def test_buckets_follow_the_rule():
    # bucket = 100 bytes = 25 floats; the 40-float tensor is larger and travels alone
    sizes = [10, 10, 10, 40, 5, 5, 20, 1]
    stats = SyncStats(version=0)
    buckets = [[n for n, _ in b] for b in iter_buckets(_weights(sizes), 100, stats)]
    assert buckets == [["w0", "w1"], ["w2"], ["w3"], ["w4", "w5"], ["w6", "w7"]]
    assert stats.num_tensors == 8 and stats.total_bytes == 4 * sum(sizes) and stats.num_buckets == 5
    assert stats.max_tensor_bytes == 160
    assert stats.peak_bucket_bytes <= 100 + stats.max_tensor_bytes  # bucket + one lookahead
    assert [n for b in iter_buckets(_weights(sizes), 10_000) for n, _ in b] == [f"w{i}" for i in range(8)]


def test_buckets_pull_lazily_and_reject_bad_items():
    pulled = []

    def source():
        for i in range(6):
            pulled.append(i)
            yield f"w{i}", torch.zeros(10)

    it = iter_buckets(source(), 80)  # two 40-byte tensors per bucket
    assert [n for n, _ in next(it)] == ["w0", "w1"] and pulled == [0, 1, 2]  # one lookahead
    with pytest.raises(TypeError, match="w0"):
        list(iter_buckets([("w0", [1.0])], 80))
    with pytest.raises(ValueError):
        list(iter_buckets([], 0))


def test_logprob_parity_metrics():
    s = [Sample(prompt_ids=[1], response_ids=[2, 3], group_id=0, rollout_logprobs=[-1.0, -2.0]),
         Sample(prompt_ids=[1], response_ids=[4], group_id=0, rollout_logprobs=[-0.5])]
    m = logprob_parity(s, [torch.tensor([-1.1, -2.0]), [-0.2]])
    assert m["rollout/logprob_diff_max"] == pytest.approx(0.3)
    assert m["rollout/logprob_diff_mean"] == pytest.approx(0.4 / 3)
    assert m["rollout/logprob_parity_tokens"] == 3
    assert logprob_parity(s, [[-1.1, -2.0], [-0.2]], max_tokens=2)["rollout/logprob_diff_max"] == pytest.approx(0.1)
    assert logprob_parity([], [])["rollout/logprob_parity_tokens"] == 0
    with pytest.raises(ValueError, match="sample 1: 1 response tokens but 2"):
        logprob_parity(s, [[-1.0, -2.0], [-0.5, -0.1]])


def test_rollout_layout():
    assert [rollout_layout(4, r, 2) for r in range(4)] == [(0, 0, 2), (1, 0, 2), (0, 1, 2), (1, 1, 2)]
    assert rollout_layout(1, 0, 1) == (0, 0, 1)
    with pytest.raises(ConfigError, match=r"rollout_tensor \(3\) must divide the world size \(4\)"):
        rollout_layout(4, 0, 3)


def test_check_prompts():
    check_prompts([[1, 2, 3]], max_model_len=10, max_new_tokens=7)
    with pytest.raises(ValueError, match=r"prompt 0 has 4 tokens.*max_new_tokens \(7\)"):
        check_prompts([[1, 2, 3, 4]], max_model_len=10, max_new_tokens=7)
    with pytest.raises(ValueError, match="empty"):
        check_prompts([[1], []], max_model_len=10, max_new_tokens=1)
    with pytest.raises(ValueError, match="outside"):
        check_prompts([[1, -1]], max_model_len=10, max_new_tokens=1, vocab_size=5)


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_sampling_params_from_config():
    from r1mega.rollout import make_sampling_params
    cfg = RolloutConfig(temperature=0.8, top_p=0.9, top_k=20, max_new_tokens=33, stop=["</answer>"],
                        stop_token_ids=[7])
    p = make_sampling_params(cfg, 4, seed=3)
    assert (p.n, p.temperature, p.top_p, p.top_k, p.max_tokens, p.seed, p.logprobs) == (4, 0.8, 0.9, 20, 33, 3, 0)
    assert p.stop == ["</answer>"] and p.stop_token_ids == [7]
    assert make_sampling_params(cfg, 1, top_k=-1, stop=[]).top_k in (-1, 0)
    with pytest.raises(ConfigError, match="n "):
        make_sampling_params(cfg, 0)
    with pytest.raises(TypeError, match="tempreature"):
        make_sampling_params(cfg, 1, tempreature=1.0)
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        make_sampling_params(cfg, 1, has_tokenizer=False)


def test_kv_cache_is_sized_to_the_step():
    """rollout.kv_cache_memory_mb unset: a step's sequences x context x KV bytes a token, +25%, >= 32 MiB.
    4 layers x 2 KV heads x head_dim 64 x (K, V) x fp32 = 4096 B a token; 64 sequences x 512 tokens."""
    from r1mega.models import read_hf_config
    from r1mega.rollout.groups import step_kv_cache_mb

    arch = read_hf_config({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 300,
                           "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4,
                           "num_attention_heads": 4, "num_key_value_heads": 2})
    assert step_kv_cache_mb(arch, 64, 512, 1, "float32") == 160        # 64 * 512 * 4096 * 1.25 / 2**20
    assert step_kv_cache_mb(arch, 64, 512, 2, "float32") == 80         # one KV head per TP rank
    assert step_kv_cache_mb(arch, 64, 512, 1, "bfloat16") == 80
    assert step_kv_cache_mb(arch, 65, 512, 1, "float32") == 163        # rounded up: 162.5
    assert step_kv_cache_mb(arch, 4, 64, 1, "float32") == 32           # the floor
    from r1mega.config import ConfigError, load_config
    with pytest.raises(ConfigError, match=r"rollout.kv_cache_memory_mb \(0\) must be >= 1"):
        load_config(None, ["rollout.kv_cache_memory_mb=0"])
