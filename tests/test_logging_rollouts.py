"""run.log_rollouts: each step's trained samples as JSON lines, rewritten whole when a step re-runs."""

import os

from r1mega.logging.rollouts import read_rollouts, step_path, write_rollouts
from r1mega.types import Sample


def _s(g, text, version, versions=None):
    return Sample(prompt_ids=[1, 2], response_ids=[5, 6, 7], group_id=g, prompt_text=f"q{g}", response_text=text,
                  reward=0.5 * g, reward_breakdown={"accuracy": float(g)}, advantage=-0.25 + g, answer=str(g),
                  policy_version=version, token_versions=versions, finish_reason="length")


def test_rows_round_trip_and_a_rerun_step_replaces_its_file(tmp_path):
    write_rollouts(str(tmp_path), 1, [_s(0, "a", 0), _s(1, "b", 0)])
    path = write_rollouts(str(tmp_path), 2, [_s(0, "c", 1, [0, 1, 1])])
    assert path == step_path(str(tmp_path), 2) and path.endswith("rollouts/step_000002.jsonl")
    rows = read_rollouts(str(tmp_path))
    assert sorted(rows) == [1, 2] and [r["response"] for r in rows[1]] == ["a", "b"]
    r = rows[1][1]
    assert (r["step"], r["group"], r["prompt"], r["reward"], r["advantage"], r["answer"]) == (1, 1, "q1", 0.5, 0.75, "1")
    assert r["reward_breakdown"] == {"accuracy": 1.0} and r["finish_reason"] == "length" and "token_versions" not in r
    assert rows[2][0]["token_versions"] == [0, 1, 1] and rows[2][0]["policy_version"] == 1
    write_rollouts(str(tmp_path), 2, [_s(3, "d", 2)])                 # the step re-run after a resume
    assert [r["response"] for r in read_rollouts(str(tmp_path))[2]] == ["d"]
    assert not [f for f in os.listdir(tmp_path / "rollouts") if f.endswith(".tmp")]
    assert read_rollouts(str(tmp_path / "nothing")) == {}
