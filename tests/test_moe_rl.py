"""A MoE policy (tiny Qwen3-MoE) through the whole GRPO loop at EP=2 in 2 real processes: vLLM
rollout of the MoE model, rewards, expert-parallel training, router statistics per step, and
the weight sync (experts gathered over EP) with engine == trainer logprobs after every sync."""

import math

import pytest

from tests.test_rl_loop import _check, _run

pytestmark = [pytest.mark.multiproc, pytest.mark.vllm, pytest.mark.slow]


def test_moe_policy_through_the_rl_loop_at_ep2(tmp_path):
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_tokenizer
    from tests.hf_models import make_hf_model

    model, _ = make_hf_model("qwen3_moe", str(tmp_path), seed=23, head_dim=64, vocab_size=512)
    build_tiny_tokenizer(512).save_pretrained(model)
    train, _ = make_splits("arithmetic", 16, 2, seed=0, ops=["+"], min_digits=1, max_digits=2)
    data = write_jsonl(train, str(tmp_path / "train.jsonl"))
    result, steps = _run((model, data), tmp_path, 2, "parallel.expert=2", "parallel.rollout_tensor=2", "run.steps=2")
    _check(result, steps, 2, model)
    for m in steps:
        assert 0.0 <= m["actor/moe/min_load"] <= m["actor/moe/max_load"] <= 1.0 and m["actor/moe/max_load"] > 0, m
        assert math.isfinite(m["actor/moe/load_balancing_loss"]), m
