"""`r1mega tiny --seeds N`: the spread over seeds (mean, min, max) and the machine that made it,
checked on hand-written per-seed summaries (the full sweep is the README's measured run)."""

import json

import pytest

from r1mega.recipes.seeds import aggregate, machine_info, markdown, run_seeds


def summary(seed, before, after, steps=600, wall=500.0):
    rates = lambda p: {"eval/pass@1": p, "eval/maj@k": p + 0.05, "eval/pass@k": p + 0.2,  # noqa: E731
                       "eval/greedy_acc": p + 0.03, "eval/mean_response_len": 57.0, "eval/prompts": 200.0}
    return {"seed": seed, "before": rates(before), "after": rates(after), "pretrain_steps": steps,
            "pretrain_val_exact": 0.92, "wall_time_s": wall, "pretrain_s": wall / 2, "rl_s": wall / 3}


SEEDS = [summary(0, 0.40, 0.75), summary(1, 0.50, 0.70, steps=900), summary(2, 0.30, 0.80, wall=620.0)]


def test_aggregate_spread_by_hand():
    agg = aggregate(SEEDS)
    assert agg["seeds"] == [0, 1, 2]
    assert agg["before"]["pass@1"] == pytest.approx({"mean": 0.4, "min": 0.3, "max": 0.5})
    assert agg["after"]["pass@1"] == pytest.approx({"mean": 0.75, "min": 0.7, "max": 0.8})
    assert agg["gain"]["pass@1"] == pytest.approx({"mean": 0.35, "min": 0.2, "max": 0.5})  # per seed, not of means
    assert "prompts" not in agg["before"]  # a count, not a metric to spread
    assert agg["pretrain_steps"] == pytest.approx({"mean": 700.0, "min": 600.0, "max": 900.0})


def test_markdown_names_spread_seeds_and_machine():
    machine = {"cpu": "Test CPU", "torch_cpu_capability": "AVX512"}
    md = markdown(aggregate(SEEDS), SEEDS, machine)
    assert "| pass@1 | 40.0% [30.0%, 50.0%] | 75.0% [70.0%, 80.0%] | +35.0 [+20.0, +50.0] |" in md
    assert "| 2 | 600 | 30.0% | 80.0% | +50.0 | 10.3 min |" in md
    assert "Machine: cpu Test CPU, torch_cpu_capability AVX512" in md


def test_machine_info_names_cpu_isa_and_versions():
    info = machine_info()
    assert info["cpu"] and info["torch_cpu_capability"] and info["torch"] and info["torch_threads"] >= 1


def test_run_seeds_reuses_finished_seeds(tmp_path):
    """A sweep whose seeds already have summary.json only aggregates (an interrupted sweep resumes)."""
    for s in SEEDS:
        d = tmp_path / f"seed_{s['seed']}"
        d.mkdir()
        (d / "summary.json").write_text(json.dumps(s))
    result = run_seeds(str(tmp_path), [0, 1, 2])
    assert result["gain"]["pass@1"]["min"] == pytest.approx(0.2)
    assert (tmp_path / "seeds.md").read_text().startswith("Held-out metrics over 3 seeds (0, 1, 2)")
    assert json.loads((tmp_path / "seeds.json").read_text())["machine"]["cpu"]
    assert (tmp_path / "eval.png").stat().st_size > 1000
