"""tools/bench_partial.py: the sync-vs-partial rollout benchmark end to end at its ``--smoke``
settings (a base built once, then a sync and a partial ``r1mega train`` child on it), and its
arithmetic (length quantiles, the warm-up steps left out, the ratios) by hand."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.dist import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import bench_partial  # noqa: E402


@pytest.mark.slow
@pytest.mark.vllm
def test_smoke_runs_both_modes_on_one_base(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "tools/bench_partial.py", "--smoke", "--seeds", "0", "--chunk", "8", "--min-groups", "0.5",
           "--out", str(out), "--work", str(work)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    result = json.loads((out / "partial_rollout.json").read_text())
    assert result["seeds"] == [0] and result["chunk"] == 8 and result["min_groups"] == 0.5 and result["smoke"]
    assert result["warmup"] == 1 and result["prompts_per_step"] == 2
    base = result["base_lengths"]
    assert base["samples"] == base["prompts"] * result["group_size"] and base["limit"] == result["max_new_tokens"]
    assert 0 < base["p50"] <= base["p90"] <= base["max"] <= base["limit"] and 0 <= base["at_limit"] <= 1
    assert sum(base["histogram"].values()) == pytest.approx(1.0) and 0 <= base["accuracy"] <= 1
    runs = result["runs"]["0"]
    for mode in ("sync", "partial"):
        run = runs[mode]
        assert run["steps"] == result["rl_steps"] == 3 and run["timed_steps"] == [2, 3], run
        assert run["step_s"] > 0 and run["rollout_s"] > 0 and run["group_s"] > 0 and run["wall_s"] > 0, run
        assert run["pass@1_before"] is not None and run["pass@1_after"] is not None, run
        assert run["reward_before"] is not None and run["reward_after"] is not None, run  # held-out reward
        saved = yaml.safe_load(open(run["config"]))  # the config the child ran
        assert saved["rollout"]["mode"] == mode and saved["run"]["seed"] == 0
        assert saved["model"]["hf_path"] == str(work / "base")  # both modes on the one base
    saved = yaml.safe_load(open(runs["partial"]["config"]))
    assert saved["rollout"]["partial_chunk"] == 8 and saved["algorithm"]["rollout_is"] == "truncate"
    assert saved["rollout"]["partial_min_groups"] == 0.5
    assert runs["sync"]["partial"] == {}
    assert runs["partial"]["partial"].get("partial/trained_groups", 0) > 0, runs["partial"]["partial"]
    row = result["comparison"]["per_seed"]["0"]
    assert row["step_ratio"] == pytest.approx(runs["sync"]["step_s"] / runs["partial"]["step_s"])
    assert set(result["comparison"]["over_seeds"]["step_ratio"]) == {"mean", "min", "max"}
    assert result["machine"]["cores"] and "tools/bench_partial.py --smoke" in result["command"]
    md = (out / "partial_rollout.md").read_text()
    assert "| 0 | partial |" in md and "Base response lengths" in md and "Command:" in md


def test_length_stats_by_hand():
    lengths = [10] * 8 + [50, 96]  # 8 short, one long, one at the limit 96
    st = bench_partial.length_stats(lengths, 96)
    assert st["mean"] == 22.6 and st["p50"] == 10 and st["p90"] == 50 and st["p99"] == 96 and st["max"] == 96
    assert st["at_limit"] == 0.1 and st["samples"] == 10
    assert st["histogram"] == {"<=12": 0.8, "<=24": 0, "<=36": 0, "<=48": 0, "<=60": 0.1, "<=72": 0, "<=84": 0,
                               "<=96": 0.1}
    with pytest.raises(ValueError, match="no response lengths"):
        bench_partial.length_stats([], 96)


def test_summarize_run_leaves_out_warmup_and_compare_divides(tmp_path):
    def step(n, total, rollout, train, reward, groups=None, rounds=None):
        row = {"step": n, "time/step": total, "time/rollout": rollout, "time/train": train, "reward/mean": reward,
               "response/len_mean": 10.0 * (n + 1), "response/len_max": 50 + n, "response/clip_frac": 0.0,
               "perf/tokens_per_s": 100.0 * n}
        if groups is not None:
            row.update({"partial/trained_groups": groups, "partial/rounds_max": rounds})
        return row

    rows = [{"step": 0, "eval/pass@1": 0.25, "eval/reward": 0.5}, step(1, 9.0, 8.0, 1.0, 0.1, 8, 7), step(2, 2.0, 1.5, 0.5, 0.2, 6, 2),
            step(3, 4.0, 2.5, 1.5, 0.3, 8, 4), step(4, 3.0, 2.0, 1.0, 0.4, 6, 3),
            {"step": 4, "eval/pass@1": 0.5, "eval/reward": 1.25}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = bench_partial.summarize_run(str(tmp_path), warmup=1, prompts_per_step=8)
    assert s["timed_steps"] == [2, 3, 4] and s["step_s"] == 3.0 and s["rollout_s"] == 2.0 and s["train_s"] == 1.0
    assert s["groups_per_step"] == 20 / 3 and s["group_s"] == 9.0 / 20  # 9 s for 6 + 8 + 6 groups
    assert s["warmup_step_s"] == [9.0] and s["all_steps_s"] == 18.0 and s["tokens_per_s"] == 300.0
    assert s["pass@1_before"] == 0.25 and s["pass@1_after"] == 0.5
    assert s["reward_before"] == 0.5 and s["reward_after"] == 1.25
    assert s["reward_first"] == 0.1 and s["reward_last3"] == pytest.approx(0.3)
    assert s["response_len_mean"] == 35.0 and s["response_len_max"] == 54  # lengths: every step
    assert s["partial"] == {"partial/rounds_max": 4.0, "partial/trained_groups": 7.0}
    sync_rows = [{k: v for k, v in r.items() if not k.startswith("partial/")} for r in rows]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sync_rows))
    sync = bench_partial.summarize_run(str(tmp_path), warmup=1, prompts_per_step=8)
    assert sync["groups_per_step"] == 8 and sync["group_s"] == 9.0 / 24 and sync["partial"] == {}
    with pytest.raises(ValueError, match=r"warmup \(4\) leaves none of the 4 steps"):
        bench_partial.summarize_run(str(tmp_path), warmup=4, prompts_per_step=8)

    fast = {**sync, "step_s": 1.5, "rollout_s": 0.5, "group_s": sync["group_s"] / 3, "all_steps_s": 6.0,
            "pass@1_after": 0.75}
    c = bench_partial.compare({"0": {"sync": sync, "partial": fast}, "1": {"sync": sync, "partial": sync}})
    r = c["per_seed"]["0"]
    assert r["step_ratio"] == 2.0 and r["rollout_ratio"] == 4.0 and r["group_ratio"] == pytest.approx(3.0)
    assert r["all_steps_ratio"] == 3.0 and r["pass@1_after_partial"] == 0.75 and r["pass@1_after_sync"] == 0.5
    assert c["over_seeds"]["step_ratio"] == {"mean": 1.5, "min": 1.0, "max": 2.0}
    d = c["held_out_difference"]["pass@1"]  # partial - sync: 0.25 and 0 -> mean 0.125, sd 0.1768, t(1) 12.706
    assert d["mean"] == 0.125 and d["pairs"] == 2 and d["within_noise"]
    assert d["hi"] - d["mean"] == pytest.approx(12.706 * 0.125)
    assert c["held_out_difference"]["reward"]["mean"] == 0.0


def test_paired_difference_by_hand():
    # differences 0.1, 0.2, 0.3: mean 0.2, sd 0.1, se 0.1 / sqrt(3), t(2) = 4.303 -> [-0.048, 0.448]
    d = bench_partial.paired_difference([1.0, 1.0, 1.0], [1.1, 1.2, 1.3])
    half = 4.303 * 0.1 / 3 ** 0.5
    assert d["mean"] == pytest.approx(0.2) and d["lo"] == pytest.approx(0.2 - half) and d["hi"] == pytest.approx(0.2 + half)
    assert d["within_noise"]
    # differences 0.19, 0.2, 0.21: sd 0.01 -> [0.175, 0.225], away from 0
    tight = bench_partial.paired_difference([1.0, 2.0, 3.0], [1.19, 2.2, 3.21])
    assert tight["lo"] == pytest.approx(0.2 - 4.303 * 0.01 / 3 ** 0.5) and not tight["within_noise"]
    with pytest.raises(ValueError, match=">= 2 pairs"):
        bench_partial.paired_difference([1.0], [2.0])
