"""The GRPO loop end to end in real processes (gloo): engine, rewards, trainer, weight sync.

For each layout, after every weight sync the engine's logprobs equal the trainer's on the
same tokens (the loop measures it every step), greedy outputs equal HF generate() with the
exported policy, and a negative control (the initial, unsynced weights) differs clearly.
"""

import json
import math
import os

import pytest

from tests.dist import REPO, torchrun
from tests.numerics import run_logprob_bound

WORKER = os.path.join(REPO, "tests", "workers", "rl_run.py")
pytestmark = [pytest.mark.multiproc, pytest.mark.vllm, pytest.mark.slow]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from r1mega.data.synthetic import make_splits, write_jsonl
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    root = tmp_path_factory.mktemp("rl")
    model = build_tiny_qwen2(str(root / "model"), heads=2, kv_heads=2, layers=2, seed=3)
    train, held = make_splits("arithmetic", 32, 4, seed=0, ops=["+"], min_digits=1, max_digits=2)
    data = write_jsonl(train, str(root / "train.jsonl"))
    write_jsonl(held, str(root / "eval.jsonl"))
    return model, data


def _run(assets, tmp_path, nproc, *overrides):
    model, data = assets
    torchrun(WORKER, str(tmp_path), model, data, *overrides, nproc=nproc, timeout=600)
    with open(tmp_path / "result.json") as f:
        result = json.load(f)
    from r1mega.logging.metrics import read_metrics
    steps = [m for m in read_metrics(tmp_path / "run") if "actor/loss" in m]
    return result, steps


def _check(result, steps, n_steps, model_dir, mini_batches=1):
    assert result["error"] is None, result["error"]
    assert [int(m["step"]) for m in steps] == list(range(1, n_steps + 1))
    # any policy of the run (Adam, rl_run.py's lr 3e-3), sequences up to model.max_seq_len 128: ~5e-2 for
    # the tiny qwen2 (init std 0.2, logits up to ~30), ~1e-3 for the MoE model (init std 0.02)
    tol = run_logprob_bound(model_dir, n_steps * mini_batches, lr=3e-3, seq=128)
    for m in steps:
        assert m["rollout/logprob_diff_max"] <= tol, (tol, m)   # engine == trainer after each sync
        assert math.isfinite(m["actor/loss"]) and math.isfinite(m["reward/mean"])
        assert math.isfinite(m["actor/grad_norm"])
        assert m["policy/version"] == m["step"]
    assert any(m["actor/grad_norm"] > 0 for m in steps)  # a step with all groups tied has none
    assert result["greedy_match"], result
    assert result["synced_diff"] <= tol, (tol, result)
    # without the sync the engine would be far off: beyond 3 tolerances (its own rounding, and a stale engine
    # failing the checks above)
    assert result["stale_diff"] > 3 * tol, (tol, result)


def test_tp2_trainer_tp2_rollout(assets, tmp_path):
    result, steps = _run(assets, tmp_path, 2, "parallel.tensor=2", "parallel.rollout_tensor=2", "run.steps=3")
    _check(result, steps, 3, assets[0])
    assert all(m["sync/direct"] == 1.0 for m in steps)  # each rank sent its own shard, no gather


def test_tp2_trainer_two_rollout_engines(assets, tmp_path):
    # rollout TP=1: two data-parallel engines feed one TP=2 trainer replica; unfused loss (TIS)
    result, steps = _run(assets, tmp_path, 2, "parallel.tensor=2", "parallel.rollout_tensor=1", "run.steps=3",
                         "algorithm.tis_cap=2.0", "algorithm.loss_agg=seq_mean_token_mean")
    _check(result, steps, 3, assets[0])


def test_pp2_trainer(assets, tmp_path):
    result, steps = _run(assets, tmp_path, 2, "parallel.pipeline=2", "run.steps=3")
    _check(result, steps, 3, assets[0])
    assert all(m["sync/direct"] == 0.0 for m in steps)  # stages are gathered to every engine


def test_dp2_reference_kl_evaluation_and_reward_model_rewards(assets, tmp_path):
    """DP=2 with a reference model (KL), two mini-batches and evaluation between steps (which puts
    the engine to sleep; the next rollout wakes it). The batches mix reasoning prompts, which keep
    the rule rewards, with general prompts (kind 'general', no answer) scored by a Bradley-Terry
    reward model trained with `r1mega train-rm`. A reward plug-in (reward.functions) joins the rule
    rewards."""
    from r1mega.data.synthetic import write_jsonl
    from r1mega.logging.metrics import read_metrics
    from r1mega.reward_model.synthetic import general_prompts, make_preference_splits

    model, data = assets
    pairs, _ = make_preference_splits(64, 0, rule="polite", seed=0)
    write_jsonl(pairs, str(tmp_path / "pairs.jsonl"))
    cfg = tmp_path / "rm.yaml"
    cfg.write_text(f"model:\n  hf_path: {model}\n  max_seq_len: 128\n")
    torchrun("-m", "r1mega.cli", "train-rm", str(cfg), "--pairs", str(tmp_path / "pairs.jsonl"), "--steps", "3",
             "--batch", "16", f"run.output_dir={tmp_path}", "run.name=rm", "run.tensorboard=false",
             "data.max_prompt_len=64", "rollout.max_new_tokens=32", nproc=1)
    with open(data) as f:
        reasoning = [json.loads(line) for line in f]
    general = general_prompts(len(reasoning), rule="polite", seed=1)
    mixed = [row for pair in zip(reasoning, general) for row in pair]  # alternate: both kinds in every batch
    mixed_path = write_jsonl(mixed, str(tmp_path / "mixed.jsonl"))
    evals = os.path.join(os.path.dirname(data), "eval.jsonl")
    result, steps = _run((model, mixed_path), tmp_path, 2, "run.steps=2", "data.shuffle=false",
                         f"reward.model_path={tmp_path / 'rm' / 'reward_model'}", "reward.model_weight=0.5",
                         "algorithm.kl_coef=0.05", "trainer.mini_batches=2", f"data.eval={evals}", "run.eval_every=1",
                         "eval.k=2", "reward.functions={boxed_once: examples.reward_plugins:boxed_once}",
                         "reward.weights={accuracy: 1.0, language: 1.0, boxed_once: 0.5}")
    _check(result, steps, 2, model, mini_batches=2)
    assert all("actor/kl" in m for m in steps)
    # a reward plug-in from a user module (examples/reward_plugins.py) scores the reasoning samples
    assert all(0.0 <= m["reward/boxed_once"] <= 1.0 for m in steps)
    for m in steps:
        assert m["batch/frac_general"] == 0.5 and m["batch/frac_reasoning"] == 0.5
        assert math.isfinite(m["reward/reward_model"]) and m["reward/reward_model"] != 0.0
        assert "reward/accuracy" in m and "reward/mean_general" in m
    evaluated = [m for m in read_metrics(tmp_path / "run") if "eval/pass@1" in m]
    # eval.before_train (default true) adds step 0, the starting policy
    assert [int(m["step"]) for m in evaluated] == [0, 1, 2] and all(m["eval/prompts"] == 4 for m in evaluated)


def test_partial_rollout_two_engines_then_resumed_on_one(assets, tmp_path):
    """rollout.mode=partial: chunks of 4 tokens, a step ends once half its groups are complete, so
    responses continue across weight updates. Two rollout engines train DP=2 for 3 steps; the run
    resumes for 2 more on one TP=2 engine (the buffer dealt over the new layout). Every generated
    group is trained once or is still in flight: none lost at the resume, none used twice. The
    engine/trainer parity holds on the current policy's tokens every step; older tokens are stale."""
    # a quarter of the vocabulary stops a response: lengths from 1 to the 12-token limit
    stops = "rollout.stop_token_ids=[" + ",".join(str(i) for i in range(0, 512, 4)) + "]"
    common = ("rollout.mode=partial", "rollout.partial_chunk=4", "rollout.partial_min_groups=0.5", stops,
              "algorithm.rollout_is=truncate", "run.save_every=1")
    first, _ = _run(assets, tmp_path, 2, *common, "run.steps=3", "run.export_hf=false")
    assert first["error"] is None, first["error"]
    result, steps = _run(assets, tmp_path, 2, *common, "run.steps=5", "parallel.rollout_tensor=2")
    _check(result, steps, 5, assets[0])
    assert all(m["rollout/logprob_diff_max"] < 1e-3 for m in steps)   # fresh tokens: fp32 rounding only
    stale = [m for m in steps if m["offpolicy/staleness_max"] > 0]
    assert stale and all(m["rollout/logprob_diff_stale_mean"] > 1e-2 for m in stale)
    assert all(m["offpolicy/staleness_mean"] == 0 for m in steps if m not in stale)
    trained = sum(m["partial/trained_groups"] for m in steps)
    left = steps[-1]["partial/in_flight_groups"] + steps[-1]["partial/waiting_groups"]
    assert trained + left == 5 * 4 and left > 0     # 4 prompts per step
    assert all(1 <= m["partial/trained_groups"] <= 4 for m in steps)
