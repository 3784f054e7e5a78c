"""The partial-rollout step (rollout.mode=partial) without vLLM: the rounds a step generates, the
groups it trains, the ones it carries (r1mega.rollout.groups.partial_rollout_groups), the stale
tokens it masks or counts (r1mega.trainer.samples) and the buffers a resume deals out
(r1mega.rollout.partial.redistribute). A fake engine gives every response a length fixed in
advance, so each case is worked out by hand."""

import pytest

from r1mega.algorithms.offpolicy import offpolicy_metrics, staleness_metrics
from r1mega.data.prompts import PromptRecord
from r1mega.rollout.groups import partial_rollout_groups
from r1mega.rollout.partial import PartialBuffer, redistribute
from r1mega.trainer.samples import mask_stale_tokens, staleness
from r1mega.types import Sample

MAX = 12


class FakeEngine:
    """Response i (in the order responses first reach the engine) is ``lengths[i]`` tokens long; it
    ends with a stop token unless that reaches MAX (then it is cut, reason 'length'). Token t of
    response i is 100 * i + t; its logprob is -(t + 1) / 100."""

    def __init__(self, lengths, dp_rank=0):
        self.lengths, self.next = list(lengths), 0
        self.dp_rank, self.tp_rank, self.calls, self.awake = dp_rank, 0, [], False

    def wake_up(self):
        self.awake = True

    def sleep(self):
        self.awake = False

    def continue_samples(self, samples, *, chunk, max_new_tokens, expected_version):
        assert self.awake and max_new_tokens == MAX
        self.calls.append([len(s.response_ids) for s in samples])
        pieces = []
        for s in samples:
            if "resp" not in s.metadata:
                s.metadata["resp"], s.metadata["target"] = self.next, self.lengths[self.next]
                self.next += 1
            i, target, have = s.metadata["resp"], s.metadata["target"], len(s.response_ids)
            k = min(chunk, target - have, max_new_tokens - have)
            toks = [100 * i + t for t in range(have, have + k)]
            done = have + k >= target and target < max_new_tokens
            pieces.append(Sample(prompt_ids=s.prompt_ids + s.response_ids, response_ids=toks, group_id=s.group_id,
                                 rollout_logprobs=[-(t % 100 + 1) / 100 for t in toks], policy_version=expected_version,
                                 finish_reason="stop" if done else "length", response_text="x" * k,
                                 metadata={"stop_reason": 2 if done else None}))
        return pieces


def _prompts(n, start=0):
    return [PromptRecord(index=start + i, prompt_text=f"q{start + i}", prompt_ids=[5, start + i], answer=str(start + i),
                         metadata={"row": start + i}) for i in range(n)]


def test_a_step_generates_rounds_until_its_groups_are_complete_and_trains_them():
    # 2 prompts x G=2, chunk 4. Responses: group 0 -> 3 and 10 tokens, group 1 -> 2 and 4 tokens.
    eng, buf = FakeEngine([3, 10, 2, 4]), PartialBuffer(group_size=2, max_new_tokens=MAX)
    samples, st = partial_rollout_groups(eng, buf, _prompts(2), 2, version=0, chunk=4, min_share=1.0)
    # round 1: all four from 0 tokens; then only the 10-token response, 4 -> 8 -> 10
    assert eng.calls == [[0, 0, 0, 0], [4], [8]]
    assert (st.rounds, st.generated_tokens, st.trained_groups, st.in_flight_groups, st.waiting_groups) == (3, 19, 2, 0, 0)
    assert len(buf) == 0 and not eng.awake
    assert [len(s.response_ids) for s in samples] == [3, 10, 2, 4]
    assert [s.group_id for s in samples] == [0, 0, 1, 1]
    long = samples[1]
    assert long.response_ids == list(range(100, 110)) and long.rollout_logprobs == pytest.approx(
        [-(t + 1) / 100 for t in range(10)])
    assert long.token_versions == [0] * 10 and long.finish_reason == "stop"
    assert long.answer == "0" and long.metadata["row"] == 0 and long.metadata["stop_reason"] == 2
    assert long.prompt_ids == [5, 0] and long.response_text == "x" * 10


def test_unfinished_groups_wait_and_continue_under_the_next_version():
    # min_share 0.5 of 2 prompts: one complete group ends the step after one round
    eng, buf = FakeEngine([3, 10, 2, 4, 1, 1, 12, 5]), PartialBuffer(group_size=2, max_new_tokens=MAX)
    s1, st1 = partial_rollout_groups(eng, buf, _prompts(2), 2, version=0, chunk=4, min_share=0.5)
    assert eng.calls == [[0, 0, 0, 0]] and st1.rounds == 1
    assert [s.metadata["row"] for s in s1] == [1, 1] and [s.group_id for s in s1] == [0, 0]  # renumbered
    assert (st1.trained_groups, st1.in_flight_groups, st1.waiting_groups) == (1, 1, 0)
    # step 2, version 1: the carried group first (its 10-token response at 4), then 2 new prompts
    s2, st2 = partial_rollout_groups(eng, buf, _prompts(2, start=2), 2, version=1, chunk=4, min_share=0.5)
    assert eng.calls[1] == [4, 0, 0, 0, 0] and st2.rounds == 1
    # complete after round 1: new group 2 (1 and 1 tokens); group 0 still at 8 of 10, group 3 at 4 of 12 / 4 of 5
    assert [s.metadata["row"] for s in s2] == [2, 2]
    assert (st2.trained_groups, st2.in_flight_groups, st2.waiting_groups) == (1, 2, 0)
    # step 3, version 2, min_share 1.0 (2 groups), new responses of 2 tokens: one round completes
    # group 0 (8 -> 10), 3's 5-token response and new groups 4 and 5; 3's 12-token one is at 8
    eng.lengths += [2, 2, 2, 2, 1, 1, 1, 1]
    s3, st3 = partial_rollout_groups(eng, buf, _prompts(2, start=4), 2, version=2, chunk=4, min_share=1.0)
    assert eng.calls[2] == [8, 4, 4, 0, 0, 0, 0] and st3.rounds == 1
    assert [s.metadata["row"] for s in s3] == [0, 0, 4, 4]  # the oldest complete groups first, at most 2
    assert (st3.trained_groups, st3.waiting_groups, st3.in_flight_groups) == (2, 1, 1)
    long = s3[1]
    assert long.response_ids == list(range(100, 110))
    assert long.token_versions == [0] * 4 + [1] * 4 + [2] * 2 and long.policy_version == 2
    # step 4, version 3: the 12-token response reaches MAX (cut, reason 'length': finished); group 3
    # and the waiting group 5 are the oldest complete
    s4, st4 = partial_rollout_groups(eng, buf, _prompts(2, start=6), 2, version=3, chunk=4, min_share=1.0)
    assert [s.metadata["row"] for s in s4] == [3, 3, 5, 5] and [s.group_id for s in s4] == [0, 0, 1, 1]
    assert (st4.trained_groups, st4.waiting_groups, st4.in_flight_groups) == (2, 2, 0)
    cut = s4[0] if s4[0].metadata["target"] == 12 else s4[1]
    assert len(cut.response_ids) == MAX and cut.finish_reason == "length"
    assert cut.token_versions == [1] * 4 + [2] * 4 + [3] * 4


def test_max_lag_makes_a_step_finish_the_groups_that_started_too_long_ago():
    # 1 prompt per step x G=2, chunk 4, min_share 1.0 of 1 group. Group 0: 2 and 12 tokens (3 rounds).
    eng, buf = FakeEngine([2, 12, 1, 1, 1, 1, 1, 1]), PartialBuffer(group_size=2, max_new_tokens=MAX)
    s1, _ = partial_rollout_groups(eng, buf, _prompts(1), 2, version=0, chunk=4, min_share=1.0, max_lag=1)
    # version 0: group 0 is not overdue (lag 0); one round leaves it at 4 of 12 and nothing complete,
    # so the step goes on: 8, then 12 -> complete (one step is sync for a lone group at min_share 1)
    assert eng.calls == [[0, 0], [4], [8]] and [s.metadata["row"] for s in s1] == [0, 0]
    # 2 prompts per step, min_share 0.5 (1 group): group 1 (1 and 1 tokens) ends step 1 after one
    # round; group 0 (12 and 1 tokens) carries over at 4 of 12
    eng, buf = FakeEngine([12, 1, 1, 1, 1, 1, 1, 1]), PartialBuffer(group_size=2, max_new_tokens=MAX)
    s1, st1 = partial_rollout_groups(eng, buf, _prompts(2), 2, version=0, chunk=4, min_share=0.5, max_lag=1)
    assert eng.calls == [[0, 0, 0, 0]] and [s.metadata["row"] for s in s1] == [1, 1] and st1.in_flight_groups == 1
    # version 1: group 0 (started at 0) has lag 1 = max_lag: the step goes on until it is done (4 -> 8
    # -> 12) although new groups 2 and 3 complete in round 1; the oldest two train, group 3 waits
    s2, st2 = partial_rollout_groups(eng, buf, _prompts(2, start=2), 2, version=1, chunk=4, min_share=0.5, max_lag=1)
    assert eng.calls[1:] == [[4, 0, 0, 0, 0], [8]] and st2.rounds == 2
    assert [s.metadata["row"] for s in s2] == [0, 0, 2, 2] and st2.in_flight_groups == 0
    assert s2[0].token_versions == [0] * 4 + [1] * 8
    # without the bound the same step stops after round 1 with group 0 still in flight
    eng, buf = FakeEngine([12, 1, 1, 1, 1, 1, 1, 1]), PartialBuffer(group_size=2, max_new_tokens=MAX)
    partial_rollout_groups(eng, buf, _prompts(2), 2, version=0, chunk=4, min_share=0.5, max_lag=None)
    s2, st2 = partial_rollout_groups(eng, buf, _prompts(2, start=2), 2, version=1, chunk=4, min_share=0.5, max_lag=None)
    assert st2.rounds == 1 and [s.metadata["row"] for s in s2] == [2, 2, 3, 3] and st2.in_flight_groups == 1
    assert buf.overdue(2, 1) == [0] and buf.overdue(2, 3) == [] and buf.overdue(2, None) == []


def test_stale_tokens_are_counted_and_masked_by_version():
    a = Sample(prompt_ids=[1], response_ids=[1, 2, 3, 4], group_id=0, token_versions=[3, 3, 4, 5], policy_version=5)
    b = Sample(prompt_ids=[1], response_ids=[1, 2], group_id=0, policy_version=5)
    c = Sample(prompt_ids=[1], response_ids=[1, 2, 3], group_id=1, token_versions=[4, 4, 5], policy_version=5,
               response_mask=[1, 0, 1])
    d = Sample(prompt_ids=[1], response_ids=[9, 9], group_id=1, token_versions=[2, 2], loss_mask=False)
    m = staleness([a, b, c, d], version=5)
    # loss tokens: a: lags 2 2 1 0; b: 0 0; c: 1 0 (the middle token is masked); d is out of the loss
    assert m["offpolicy/staleness_lag_0"] == 4 and m["offpolicy/staleness_lag_1"] == 2
    assert m["offpolicy/staleness_lag_2"] == 2 and m["offpolicy/staleness_mean"] == pytest.approx(6 / 8)
    assert m["offpolicy/staleness_max"] == 2 and m["offpolicy/stale_masked_frac"] == pytest.approx(1 / 9)
    mask_stale_tokens([a, b, c, d], version=5)
    assert a.response_mask == [0, 0, 0, 1] and b.response_mask is None and c.response_mask == [0, 0, 1]
    m = staleness([a, b, c, d], version=5)
    assert m["offpolicy/staleness_max"] == 0 and m["offpolicy/staleness_lag_0"] == 4
    assert m["offpolicy/stale_masked_frac"] == pytest.approx(5 / 9)  # a: 3, c: 2 (its middle one already was)


def test_staleness_metrics_are_the_staleness_part_of_offpolicy_metrics():
    import torch
    g = torch.Generator().manual_seed(3)
    versions = torch.randint(0, 6, (5, 7), generator=g)
    mask = (torch.rand(5, 7, generator=g) > 0.3).float()
    w = torch.rand(5, 7, generator=g) + 0.5
    full = offpolicy_metrics(versions, 6, w, mask, mask, max_lag=4)
    lag = (6 - versions)[mask > 0]
    part = staleness_metrics(lag.tolist(), max_lag=4)
    assert part == {k: v for k, v in full.items() if "staleness" in k}
    assert staleness_metrics([], max_lag=2) == {"offpolicy/staleness_lag_0": 0.0, "offpolicy/staleness_lag_1": 0.0,
                                                "offpolicy/staleness_lag_2+": 0.0, "offpolicy/staleness_mean": 0.0,
                                                "offpolicy/staleness_max": 0.0}
    with pytest.raises(ValueError, match="lag: must be >= 0"):
        staleness_metrics([1, -1])


def _buffer(groups, start=0):
    buf = PartialBuffer(group_size=2, max_new_tokens=MAX)
    for g in range(groups):
        buf.add_groups([Sample(prompt_ids=[start + g], response_ids=[1] * j, group_id=g, rollout_logprobs=[-1.0] * j,
                               finish_reason="length") for j in (1, 2)])
    return buf


def test_a_resume_deals_every_group_in_flight_once():
    states = [_buffer(3).state_dict(), _buffer(2, start=10).state_dict()]
    same = redistribute(states, 2, group_size=2, max_new_tokens=MAX)
    assert [b.state_dict() for b in same] == states                         # unchanged layout: as saved
    for parts in (1, 3, 4):
        bufs = redistribute(states, parts, group_size=2, max_new_tokens=MAX)
        prompts = [g[0].prompt_ids[0] for b in bufs for g in b.groups.values()]
        assert prompts == [0, 1, 2, 10, 11]                                  # each once, oldest first
        assert max(len(b) for b in bufs) - min(len(b) for b in bufs) <= 1
        assert all(sorted(b.groups) == list(range(len(b))) and b.next_key == len(b) for b in bufs)
    with pytest.raises(ValueError, match="group_size 2 with max_new_tokens 12, but this run has algorithm.group_size=4"):
        redistribute(states, 2, group_size=4, max_new_tokens=MAX)
