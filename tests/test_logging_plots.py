"""plot_metrics / plot_run: PNGs from a synthetic metrics file; clear errors on empty/missing."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from r1mega.logging.metrics import MetricsLogger  # noqa: E402
from r1mega.logging.plots import auto_smoothing, ema, plot_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_synthetic_run(run_dir: Path, steps: int = 120) -> None:
    rng = np.random.default_rng(0)
    with MetricsLogger(run_dir, tensorboard=False) as log:
        for s in range(1, steps + 1):
            acc = min(0.9, 0.2 + 0.6 * s / steps + 0.05 * rng.standard_normal())
            m = {
                "reward/mean": acc + 0.1, "reward/accuracy": acc, "reward/format": 0.1, "acc/mean": acc,
                "response/len_mean": 300 + 4 * s + 20 * rng.standard_normal(), "response/len_max": 1024,
                "response/clip_frac": 0.02 * s / steps, "actor/kl": 1e-3 * s / steps,
                "actor/entropy": 0.8 - 0.3 * s / steps, "actor/clip_frac": 0.01, "actor/grad_norm": 0.5,
                "actor/lr": 1e-6, "actor/loss": 0.01 * rng.standard_normal(),
                "rollout/logprob_diff_mean": 1e-3, "perf/tokens_per_s": 5000.0,
                "time/rollout": 6.0 + rng.random(), "time/reward": 0.2, "time/logprob": 0.8, "time/train": 2.5,
                "time/sync": 0.3, "time/other": 0.2,
            }
            m["time/step"] = sum(v for k, v in m.items() if k.startswith("time/"))
            if s == 7:
                m["actor/grad_norm"] = math.nan  # a bad step must not break the curves
            if s % 40 == 0:
                m.update({"eval/pass@1": acc - 0.05, "eval/maj@16": acc, "eval/greedy_acc": acc - 0.02})
            log.log(s, m)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    assert path.read_bytes()[:8] == PNG_MAGIC, path


def test_plot_run_writes_all_pngs(tmp_path):
    run = tmp_path / "grpo_demo"
    write_synthetic_run(run, steps=60)
    paths = plot_run(run, tmp_path / "out", keys=["reward/*"])
    names = sorted(p.name for p in paths)
    assert names == sorted(["reward_length.png", "reward.png", "length.png", "actor.png", "time.png",
                            "eval.png", "keys.png"])
    for p in paths:
        assert_png(p)


def test_missing_groups_are_skipped(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        for s in range(5):
            log.log(s, {"reward/mean": s * 0.1})
    paths = plot_run(tmp_path)  # default out: run_dir/plots
    assert sorted(p.name for p in paths) == ["reward.png", "reward_length.png"]
    assert all(p.parent == tmp_path / "plots" for p in paths)
    assert_png(paths[0])
    with pytest.raises(ValueError, match="no metric matches"):
        plot_run(tmp_path, keys=["nope/*"])


def test_empty_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="no records"):
        plot_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="no metrics file"):
        plot_run(tmp_path / "missing")


def test_cli(tmp_path):
    with MetricsLogger(tmp_path / "run", tensorboard=False) as log:  # small: the subprocess pays imports
        for s in range(1, 6):
            log.log(s, {"reward/mean": s * 0.1, "response/len_mean": 100 + s})
    cmd = [sys.executable, str(REPO / "tools" / "plot_metrics.py")]
    ok = subprocess.run(cmd + [str(tmp_path / "run"), "--out", str(tmp_path / "figs")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "reward_length.png" in ok.stdout
    assert_png(tmp_path / "figs" / "reward_length.png")
    bad = subprocess.run(cmd + [str(tmp_path / "nothing")], capture_output=True, text=True)
    assert bad.returncode == 1 and "no metrics file" in bad.stderr


def test_ema():
    v = np.array([1.0, np.nan, 3.0, 3.0])
    out = ema(v, 0.5)
    assert out[0] == 1.0 and math.isnan(out[1])  # debiased: the first point is itself
    assert out[2] == pytest.approx((0.5 * 0.5 * 1 + 0.5 * 3) / 0.75)
    assert auto_smoothing(10) == 0.0 and 0.9 < auto_smoothing(1000) <= 0.95


def test_eval_chart_draws_rates_not_counts(tmp_path):
    """eval.png compares the base (step 0) with the last evaluation, in rates only: counts such as
    the number of prompts (200) would flatten the rates to zero on a shared axis."""
    from r1mega.logging.plots import eval_rates, plot_eval

    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log(0, {"eval/pass@1": 0.31, "eval/maj@k": 0.37, "eval/prompts": 200.0, "eval/k": 4.0,
                    "eval/samples": 800.0, "eval/mean_response_len": 56.8, "eval/greedy_acc": 0.35})
        log.log(1, {"reward/mean": 0.4})
        log.log(56, {"eval/pass@1": 0.72, "eval/maj@k": 0.75, "eval/prompts": 200.0, "eval/greedy_acc": 0.8})
    from r1mega.logging.metrics import read_metrics
    rates = eval_rates(read_metrics(tmp_path / "metrics.jsonl"))
    assert rates == [(0, {"pass@1": 0.31, "maj@k": 0.37, "greedy_acc": 0.35}),
                     (56, {"pass@1": 0.72, "maj@k": 0.75, "greedy_acc": 0.8})]
    assert_png(plot_eval(read_metrics(tmp_path / "metrics.jsonl"), tmp_path / "eval.png", "run"))
    # logs of today carry cons@k and its former name maj@k: one bar, cons@k
    both = {"step": 3, "eval/pass@1": 0.25, "eval/cons@k": 0.5, "eval/maj@k": 0.5, "eval/pass@k": 0.75}
    assert eval_rates([both]) == [(3, {"pass@1": 0.25, "cons@k": 0.5, "pass@k": 0.75})]


def test_before_after_and_stage_charts(tmp_path):
    from r1mega.logging.plots import plot_before_after, plot_stages

    seeds_before = {"pass@1": [0.40, 0.45, 0.52], "maj@k": [0.5, 0.55, 0.6]}
    seeds_after = {"pass@1": [0.71, 0.80, 0.84], "maj@k": [0.8, 0.85, 0.9]}
    assert_png(plot_before_after(seeds_before, seeds_after, tmp_path / "seeds.png", title="3 seeds"))
    assert_png(plot_before_after({"pass@1": 0.4}, {"pass@1": 0.7}, tmp_path / "one.png", title="one run"))
    stages = ["base", "cold start", "reasoning RL"]
    assert_png(plot_stages(stages, {"pass@1": [[0.1, 0.2], [0.6, 0.7], [0.7, 0.8]], "general": [0.0, 0.0, None]},
                           tmp_path / "chain.png", title="chain"))


def write_moe_run(run_dir: Path, steps: int = 40, prefix: str = "actor/") -> None:
    """A DeepSeek-V3-like run's router health: the trainer's train-step stats (``prefix``),
    the rollout's recorded-routing share, and per-layer curves for MoE layers 1..3."""
    rng = np.random.default_rng(1)
    with MetricsLogger(run_dir, tensorboard=False) as log:
        for s in range(1, steps + 1):
            m = {"reward/mean": 0.5, f"{prefix}moe/tokens_dropped": 0.0, f"{prefix}rollout/routed_share": 1.0}
            for layer in (1, 2, 3):
                m[f"{prefix}moe/layer{layer}/imbalance"] = 1.2 + 0.5 / s + 0.05 * layer * rng.random()
                m[f"{prefix}moe/layer{layer}/bias_drift"] = 1e-3 * s * (0.5 + 0.2 * layer)
                m[f"{prefix}moe/layer{layer}/route_mismatch"] = 0.05 + 0.01 * layer * rng.random()
            for stat in ("imbalance", "bias_drift", "route_mismatch"):
                m[f"{prefix}moe/{stat}"] = max(m[f"{prefix}moe/layer{i}/{stat}"] for i in (1, 2, 3))
            m[f"{prefix}moe/route_mismatch_used"] = 0.0 if s > steps // 2 else m[f"{prefix}moe/route_mismatch"]
            log.log(s, m)


@pytest.mark.parametrize("prefix", ["actor/", ""])
def test_moe_router_health_chart(tmp_path, prefix):
    """moe.png is drawn from router stats logged with or without the trainer's ``actor/``
    prefix, one panel per logged group; a run without MoE keys draws none."""
    from r1mega.logging.metrics import read_metrics
    from r1mega.logging.plots import moe_layer_keys, moe_panels

    write_moe_run(tmp_path / "moe", prefix=prefix)
    paths = plot_run(tmp_path / "moe")
    assert "moe.png" in [p.name for p in paths]
    assert_png(tmp_path / "moe" / "plots" / "moe.png")
    keys = set().union(*read_metrics(tmp_path / "moe" / "metrics.jsonl"))
    panels = moe_panels(keys)
    assert [p["title"].split(" ")[0] for p in panels] == ["routing", "tokens", "load", "expert-bias", "tokens"]
    assert [k for _, k in moe_layer_keys(keys, "imbalance")] == [f"{prefix}moe/layer{i}/imbalance" for i in (1, 2, 3)]
    # both spellings logged: the trainer's actor/ key wins, a layer is drawn once
    assert moe_layer_keys({"moe/layer2/imbalance", "actor/moe/layer2/imbalance", "moe/layer10/imbalance"},
                          "imbalance") == [(2, "actor/moe/layer2/imbalance"), (10, "moe/layer10/imbalance")]

    with MetricsLogger(tmp_path / "dense", tensorboard=False) as log:
        for s in range(1, 6):  # the recorded-routing share alone does not make an MoE chart
            log.log(s, {"reward/mean": s * 0.1, "actor/kl": 0.01, "rollout/routed_share": 1.0})
    assert "moe.png" not in [p.name for p in plot_run(tmp_path / "dense")]
    assert not (tmp_path / "dense" / "plots" / "moe.png").exists()
