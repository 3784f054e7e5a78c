"""The partial-rollout buffer (r1mega.rollout.partial): continuation requests, per-token versions and
logprobs across pieces, groups that leave only whole and finished, in order, and a checkpoint round
trip that loses nothing and repeats nothing. Hand-built samples: the engine is not needed here."""

import json

import pytest

from r1mega.rollout.partial import (PartialBuffer, continuation_request, extend, is_finished, token_versions)
from r1mega.types import Sample

N = 6  # max_new_tokens


def _s(group, resp, reason, version=0, prompt=(1, 2)):
    return Sample(prompt_ids=list(prompt), response_ids=list(resp), group_id=group, finish_reason=reason,
                  rollout_logprobs=[-0.1 * (t + 1) for t in resp], policy_version=version,
                  response_text="".join(chr(97 + t % 26) for t in resp))


def test_finished_means_a_stop_or_the_response_limit():
    assert is_finished(_s(0, [5], "stop"), N)
    assert not is_finished(_s(0, [5, 6], "length"), N)           # cut by the step's chunk: continues
    assert is_finished(_s(0, [5] * N, "length"), N)              # cut by max_new_tokens: done


def test_continuation_request_and_extend_keep_every_token_with_its_version_and_logprob():
    s = _s(3, [7, 8], "length", version=4)
    prompt, budget = continuation_request(s, chunk=3, max_new_tokens=N)
    assert prompt == [1, 2, 7, 8] and budget == 3
    assert continuation_request(_s(3, [7, 8, 9, 10], "length"), chunk=3, max_new_tokens=N)[1] == 2  # 6 - 4 left
    piece = Sample(prompt_ids=prompt, response_ids=[9, 11], group_id=3, finish_reason="stop",
                   rollout_logprobs=[-0.5, -0.25], policy_version=5, response_text="jl")
    out = extend(s, piece)
    assert out.response_ids == [7, 8, 9, 11] and out.prompt_ids == [1, 2]
    assert out.rollout_logprobs == pytest.approx([-0.8, -0.9, -0.5, -0.25])
    assert out.token_versions == [4, 4, 5, 5] and out.policy_version == 5
    assert out.finish_reason == "stop" and out.response_text == "hijl" and out.group_id == 3
    assert s.response_ids == [7, 8] and s.token_versions is None   # the original is untouched
    assert token_versions(s) == [4, 4]
    again = extend(out, Sample(prompt_ids=[], response_ids=[12], group_id=3, finish_reason="length",
                               rollout_logprobs=[-1.0], policy_version=7))
    assert again.token_versions == [4, 4, 5, 5, 7]


def test_bad_requests_are_refused_by_name():
    with pytest.raises(ValueError, match=r"chunk \(0\) must be >= 1"):
        continuation_request(_s(0, [1], "length"), chunk=0, max_new_tokens=N)
    with pytest.raises(ValueError, match="already has 6 response tokens .* it is finished"):
        continuation_request(_s(0, [1] * N, "length"), chunk=2, max_new_tokens=N)
    no_lp = _s(0, [1], "length").replace(rollout_logprobs=None)
    with pytest.raises(ValueError, match="needs the engine's logprob of every token"):
        extend(no_lp, _s(0, [2], "stop"))
    with pytest.raises(ValueError, match="not whole groups of group_size 2"):
        PartialBuffer(group_size=2, max_new_tokens=N).add_groups([_s(0, [1], "stop")] * 3)
    with pytest.raises(ValueError, match=r"mix group ids \[0, 1\]"):
        PartialBuffer(group_size=2, max_new_tokens=N).add_groups([_s(0, [1], "stop"), _s(1, [1], "stop")])


def test_groups_leave_whole_finished_and_in_order():
    buf = PartialBuffer(group_size=2, max_new_tokens=N)
    # step 1: group A finishes at once; group B has one long sample; group C two long ones
    keys = buf.add_groups([_s(0, [1], "stop"), _s(0, [2, 3], "stop"),
                           _s(1, [4], "stop"), _s(1, [5, 6], "length"),
                           _s(2, [7, 8], "length"), _s(2, [9, 9], "length")])
    assert keys == [0, 1, 2]
    assert [(k, i) for k, i, _ in buf.unfinished()] == [(1, 1), (2, 0), (2, 1)]
    done = buf.pop_complete()
    assert [[s.response_ids for s in g] for g in done] == [[[1], [2, 3]]]
    assert len(buf) == 2
    # step 2 (version 1): B's long sample stops; C's first reaches the limit, its second is cut again
    for k, i, s in buf.unfinished():
        piece = {(1, 1): ([10], "stop"), (2, 0): ([11, 12, 13, 14], "length"), (2, 1): ([15], "length")}[(k, i)]
        buf.update(k, i, extend(s, Sample(prompt_ids=[], response_ids=piece[0], group_id=s.group_id,
                                          finish_reason=piece[1], rollout_logprobs=[-1.0] * len(piece[0]),
                                          policy_version=1)))
    buf.add_groups([_s(3, [16], "stop"), _s(3, [17], "stop")])   # a new group finishes at once, after C
    done = buf.pop_complete()
    assert [g[0].group_id for g in done] == [1, 3]                  # B then the new one; C still waits
    assert done[0][1].token_versions == [0, 0, 1] and done[0][1].response_ids == [5, 6, 10]
    assert [(k, i) for k, i, _ in buf.unfinished()] == [(2, 1)]
    with pytest.raises(KeyError, match="no group 1"):
        buf.update(1, 0, _s(1, [1], "stop"))


def test_checkpoint_round_trip_loses_nothing_and_repeats_nothing(tmp_path):
    buf = PartialBuffer(group_size=2, max_new_tokens=N)
    buf.add_groups([_s(0, [1, 2], "length", version=2), _s(0, [3], "stop", version=2),
                    _s(1, [4], "stop", version=3), _s(1, [5], "stop", version=3)])
    k, i, s = buf.unfinished()[0]
    buf.update(k, i, extend(s, Sample(prompt_ids=[], response_ids=[6], group_id=0, finish_reason="length",
                                      rollout_logprobs=[-2.0], policy_version=3)))
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(buf.state_dict()))              # plain JSON: it goes into the run checkpoint
    back = PartialBuffer.from_state_dict(json.loads(path.read_text()))
    assert back == buf
    assert [g[0].group_id for g in back.pop_complete()] == [1]
    assert [(k, i, s.token_versions) for k, i, s in back.unfinished()] == [(0, 0, [2, 2, 3])]
    assert back.add_groups([_s(9, [1], "stop"), _s(9, [1], "stop")]) == [2]   # keys go on, never reused
