"""`r1mega r1-chain --seeds N`: each stage's gain per seed and its spread, the chain chart, checked on
hand-written chain summaries (the full chain over seeds is the README's measured run)."""

import json

import pytest

from r1mega.recipes.chain_seeds import aggregate, markdown, run_chain_seeds
from r1mega.recipes.r1_chain import gains_line, stage_gains

STAGES = ["0 base", "1 cold-start SFT", "2 reasoning RL", "3-4 rejection sampling + SFT",
          "5-6 all-scenario RL (rules + RM)", "student base", "7 distilled student (Llama, own tokenizer)"]


def rows(p1, rule):
    """Chain rows with pass@1 ``p1[i]`` and general rule rate ``rule[i]`` at stage ``STAGES[i]``."""
    return [{"stage": st, "model": f"m{i}", "pass@1": p, "maj@k": p + 0.02, "greedy": p + 0.01,
             "general_rule_rate": r, "response_len": 50.0 + i} for i, (st, p, r) in enumerate(zip(STAGES, p1, rule))]


def chain(seed, p1, rule, wall=1500.0):
    r = rows(p1, rule)
    return {"seed": seed, "rows": r, "gains": stage_gains(r), "wall_time_s": wall}


RULE = [0.0, 0.0, 0.0, 0.5, 0.9, 0.0, 0.6]
SEEDS = [chain(0, [0.40, 0.55, 0.70, 0.72, 0.74, 0.30, 0.50], RULE),
         chain(1, [0.35, 0.60, 0.66, 0.70, 0.69, 0.25, 0.45], [0.0, 0.0, 0.0, 0.25, 1.0, 0.0, 0.5], wall=1700.0)]


def test_stage_gains_by_hand():
    g = SEEDS[0]["gains"]
    assert g["reasoning_rl_pass@1"] == pytest.approx(0.15)      # stage 2 - stage 1
    assert g["general_rl_general_rule"] == pytest.approx(0.4)   # stage 5-6 - stage 3-4
    assert g["general_rl_pass@1"] == pytest.approx(0.02)
    assert g["distill_pass@1"] == pytest.approx(0.2)            # stage 7 - student base
    assert gains_line(g).startswith("Stage gains (points): reasoning_rl_pass@1 +15.0, general_rl_general_rule +40.0")


def test_stage_gains_skip_missing_stages():
    assert stage_gains(rows([0.1, 0.2, 0.5], [0.0, 0.0, 0.0])) == {"reasoning_rl_pass@1": pytest.approx(0.3)}


def test_aggregate_per_seed_gains_and_spread():
    agg = aggregate(SEEDS)
    assert agg["seeds"] == [0, 1]
    r = agg["gains"]["reasoning_rl_pass@1"]
    assert r["per_seed"] == pytest.approx([0.15, 0.06]) and r["min"] == pytest.approx(0.06)
    assert agg["gains"]["general_rl_pass@1"]["min"] == pytest.approx(-0.01)  # a loss on one seed is not averaged away
    assert agg["stages"]["2 reasoning RL"]["pass@1"] == pytest.approx({"mean": 0.68, "min": 0.66, "max": 0.70})


def test_markdown_shows_every_seed_and_machine():
    md = markdown(aggregate(SEEDS), {"cpu": "Test CPU"}, [1500.0, 1700.0])
    assert "| 2 reasoning RL | 68.0% [66.0%, 70.0%] |" in md
    assert "| pass@1: stage 1 -> 2 | +15.0 | +6.0 | +10.5 | +6.0 |" in md
    assert "| general_rule_rate: stage 3-4 -> 5-6 | +40.0 | +75.0 | +57.5 | +40.0 |" in md
    assert "Wall time per seed: 25.0 min, 28.3 min" in md and "Machine: cpu Test CPU" in md


def test_run_chain_seeds_reuses_finished_seeds_and_draws_the_chart(tmp_path):
    for s in SEEDS:
        d = tmp_path / f"seed_{s['seed']}"
        d.mkdir()
        (d / "chain.json").write_text(json.dumps(s))
    result = run_chain_seeds(str(tmp_path), [0, 1])
    assert result["gains"]["general_rl_general_rule"]["mean"] == pytest.approx(0.575)
    assert json.loads((tmp_path / "chain_seeds.json").read_text())["machine"]["cpu"]
    assert (tmp_path / "chain_seeds.md").read_text().startswith("R1 chain over 2 seeds (0, 1)")
    assert (tmp_path / "chain.png").stat().st_size > 1000
