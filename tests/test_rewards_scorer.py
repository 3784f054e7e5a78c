"""The pool scorer: per-sample timeout, errors, crashes, reuse across steps."""

from __future__ import annotations

import logging
import os
import time

import pytest

from r1mega.rewards import REWARDS, RewardConfig, RewardResult, RewardScorer, score_samples
from r1mega.types import Sample

TIMEOUT = 1.0
MARGIN = 1.0


# Misbehaving rewards: module-level so they pickle (by reference) to the spawned workers.
def misbehaving_reward(response, answer, meta, cfg):
    mode = meta.get("mode")
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "raise":
        raise RuntimeError("reward bug")
    if mode == "crash":
        os._exit(3)
    return RewardResult(0.5, {"mode": mode})


def sample(i, mode="ok", text=None, answer="4", group=0):
    return Sample(prompt_ids=[1, 2], response_ids=list(range(5)), group_id=group, answer=answer,
                  response_text=text or "<think>2+2</think> The answer is \\boxed{4}", metadata={"mode": mode})


REGISTRY = {**REWARDS, "misbehaving": misbehaving_reward}


@pytest.fixture(scope="module")
def scorer():
    cfg = RewardConfig(weights={"accuracy": 1.0, "format": 0.5, "misbehaving": 2.0}, timeout_s=TIMEOUT,
                       math_timeout_s=0.5, timeout_score=-1.0, num_workers=2)
    with RewardScorer(cfg, rewards=REGISTRY) as sc:
        sc.start()
        yield sc


def test_good_batch_weighted_sum(scorer):
    batch = [sample(i) for i in range(4)] + [sample(9, text="<think>x</think> \\boxed{5}")]
    stats = scorer.score(batch)
    assert stats["n_error"] == 0 and stats["n_timeout"] == 0
    assert [s.reward for s in batch] == [1 + 0.5 + 1.0] * 4 + [0 + 0.5 + 1.0]
    assert batch[0].reward_breakdown == {"accuracy": 1.0, "format": 1.0, "misbehaving": 0.5, "error": 0.0, "timeout": 0.0}
    assert batch[4].metadata["reward_info"]["accuracy"]["pred"] == "5"


def test_hang_and_raise_finish_within_timeout(scorer, caplog):
    batch = [sample(0), sample(1, "hang"), sample(2, "raise"), sample(3), sample(4), sample(5)]
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="r1mega.rewards"):
        stats = scorer.score(batch)
    elapsed = time.monotonic() - t0
    assert elapsed < TIMEOUT + MARGIN, elapsed
    assert stats["n_timeout"] == 1 and stats["n_error"] == 1
    hung, raised = batch[1], batch[2]
    assert hung.reward == -1.0 and hung.reward_breakdown["timeout"] == 1.0 and hung.reward_breakdown["error"] == 0.0
    assert raised.reward == -1.0 and raised.reward_breakdown["error"] == 1.0
    assert raised.reward_breakdown["accuracy"] == 1.0          # the other rewards of that sample still ran
    assert all(s.reward == 2.5 for s in batch if s not in (hung, raised))
    assert "timed out" in caplog.text and "RuntimeError: reward bug" in caplog.text


def test_two_hangs_on_two_workers(scorer):
    batch = [sample(0, "hang"), sample(1, "hang"), sample(2)]
    t0 = time.monotonic()
    scorer.score(batch)
    # both workers are stuck for TIMEOUT, the good sample waits for a booted replacement
    assert time.monotonic() - t0 < 2 * TIMEOUT + 3 * MARGIN
    assert [s.reward_breakdown["timeout"] for s in batch] == [1.0, 1.0, 0.0]
    assert batch[2].reward == 2.5


def test_crash_is_scored_and_worker_replaced(scorer):
    batch = [sample(0, "crash"), sample(1), sample(2)]
    stats = scorer.score(batch)
    assert stats["n_error"] == 1 and batch[0].reward == -1.0 and batch[0].reward_breakdown["error"] == 1.0
    assert batch[1].reward == batch[2].reward == 2.5


def test_pool_is_reused_and_healthy_after_failures(scorer):
    pids = {w.proc.pid for w in scorer._workers}
    scorer.start()                                      # replacements boot
    assert len(scorer._workers) == 2 and all(w.proc.is_alive() for w in scorer._workers)
    batch = [sample(i) for i in range(6)]
    scorer.score(batch)
    assert all(s.reward == 2.5 for s in batch)
    assert {w.proc.pid for w in scorer._workers} == pids  # no new processes for a healthy step


def test_inline_mode_and_score_samples():
    cfg = RewardConfig(weights={"accuracy": 1.0, "length": 1.0}, num_workers=0, length_target=4)
    batch = [sample(0), sample(1, text="\\boxed{3}")]
    RewardScorer(cfg).score(batch)
    assert [s.reward for s in batch] == [1.0 - 0.25, -0.25]   # 5 tokens vs target 4
    cfg2 = RewardConfig(weights={"format": 1.0}, num_workers=1, timeout_s=5.0)
    batch2 = [sample(0), sample(1, text="no think block")]
    score_samples(batch2, cfg2)
    assert [s.reward for s in batch2] == [1.0, 0.0]
    batch3 = [sample(0), sample(1, text="no think block")]
    with RewardScorer(RewardConfig(weights={"format": 1.0}, num_workers=1, start_method="forkserver")) as sc:
        sc.score(batch3)
    assert [s.reward for s in batch3] == [1.0, 0.0]


def test_unknown_reward_name_lists_valid():
    with pytest.raises(ValueError, match="accuracy"):
        RewardScorer(RewardConfig(weights={"acc": 1.0}))


def test_unpicklable_metadata_fails_only_that_sample(scorer):
    bad = sample(1)
    bad.metadata["handle"] = lambda: None                 # a lambda does not pickle
    batch = [sample(0), bad, sample(2)]
    stats = scorer.score(batch)
    assert stats["n_error"] == 1 and bad.reward == -1.0 and bad.reward_breakdown["error"] == 1.0
    assert batch[0].reward == batch[2].reward == 2.5
