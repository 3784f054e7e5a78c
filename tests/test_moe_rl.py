"""A MoE policy (tiny Qwen3-MoE) through the whole GRPO loop at EP=2 in 2 real processes: vLLM
rollout of the MoE model (rollout TP 2), rewards, expert-parallel training, router statistics per
step, the weight sync (experts gathered over EP) with engine == trainer logprobs after every sync.
Two steps record the engine's routing without replaying it (``rollout.return_routed_experts``), with
a checkpoint each; the run then resumes with rollout routing replay (``algorithm.routing_replay=r3``)
for a third: the trainer's routing equals the engine's on every recorded token."""

import math

import pytest

from tests.test_rl_loop import _check, _run

pytestmark = [pytest.mark.multiproc, pytest.mark.vllm, pytest.mark.slow]


def test_moe_policy_through_the_rl_loop_at_ep2_then_resumed_with_routing_replay(tmp_path):
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_tokenizer
    from tests.hf_models import make_hf_model

    model, _ = make_hf_model("qwen3_moe", str(tmp_path), seed=23, head_dim=64, vocab_size=512)
    build_tiny_tokenizer(512).save_pretrained(model)
    train, _ = make_splits("arithmetic", 16, 2, seed=0, ops=["+"], min_digits=1, max_digits=2)
    data = write_jsonl(train, str(tmp_path / "train.jsonl"))
    common = ("parallel.expert=2", "parallel.rollout_tensor=2", "run.save_every=1")
    first, _ = _run((model, data), tmp_path, 2, *common, "rollout.return_routed_experts=true", "run.steps=2",
                    "run.export_hf=false")
    assert first["error"] is None, first["error"]
    result, steps = _run((model, data), tmp_path, 2, *common, "algorithm.routing_replay=r3", "run.steps=3")
    _check(result, steps, 3, model)
    for m in steps:
        assert 0.0 <= m["actor/moe/min_load"] <= m["actor/moe/max_load"] <= 1.0 and m["actor/moe/max_load"] > 0, m
        assert math.isfinite(m["actor/moe/load_balancing_loss"]), m
        assert m["rollout/routed_share"] == 1.0, m          # short prompts: nothing served from the prefix cache
        assert 0.0 <= m["moe/route_mismatch"] < 0.5, m      # the trainer's routers' own choice vs the engine's
        assert m["rollout/logprob_diff_max"] < 1e-3, m
    before, after = steps[:2], steps[2:]
    assert all(m["moe/route_mismatch_used"] == m["moe/route_mismatch"] for m in before)  # recorded, not replayed
    assert all(m["moe/route_mismatch_used"] == 0.0 for m in after)  # replayed: the engine's experts everywhere
