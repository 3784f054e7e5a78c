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


def test_moe_policy_with_rollout_routing_replay_at_ep2_resumes(tmp_path):
    """algorithm.routing_replay=r3 through the loop at EP=2: the engine (rollout TP 2) records every
    fed token's experts, the trainer replays them (its routing never differs from the engine's on a
    recorded token), checkpoints every step, and a resumed run goes on with replay."""
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_tokenizer
    from tests.hf_models import make_hf_model

    model, _ = make_hf_model("qwen3_moe", str(tmp_path), seed=29, head_dim=64, vocab_size=512)
    build_tiny_tokenizer(512).save_pretrained(model)
    train, _ = make_splits("arithmetic", 16, 2, seed=1, ops=["+"], min_digits=1, max_digits=2)
    data = write_jsonl(train, str(tmp_path / "train.jsonl"))
    common = ("parallel.expert=2", "parallel.rollout_tensor=2", "algorithm.routing_replay=r3", "run.save_every=1")
    first, _ = _run((model, data), tmp_path, 2, *common, "run.steps=2", "run.export_hf=false")
    assert first["error"] is None, first["error"]
    result, steps = _run((model, data), tmp_path, 2, *common, "run.steps=3")
    _check(result, steps, 3, model)
    for m in steps:
        assert m["rollout/routed_share"] == 1.0, m          # short prompts: nothing served from the prefix cache
        assert m["moe/route_mismatch_used"] == 0.0, m       # replayed: the engine's experts on every recorded token
        assert 0.0 <= m["moe/route_mismatch"] < 0.5, m      # what the trainer's routers alone would have chosen
        assert m["rollout/logprob_diff_max"] < 1e-3, m
    assert (tmp_path / "run" / "checkpoints").exists()
