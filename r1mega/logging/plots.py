"""PNG plots of a run's ``metrics.jsonl`` (matplotlib, no display needed).

``plot_run(run_dir, out_dir)`` writes, for each group whose keys are present:

- ``reward_length.png``  reward (and accuracy) and response length vs step: the README figure
- ``reward.png``         ``reward/mean``, each ``reward/<name>``, ``acc/mean``
- ``length.png``         ``response/len_mean``, ``response/len_max``, ``response/clip_frac``
- ``actor.png``          ``actor/kl``, ``actor/entropy``, ``actor/clip_frac``, grad norm, loss,
                         lr, trainer/rollout logprob difference (one panel each)
- ``time.png``           step-time breakdown (``time/<stage>``) as stacked areas, seconds and %
- ``eval.png``           held-out rates (pass@1, cons@k, pass@k, greedy accuracy): the first
                         evaluation against the last as bars, and over steps when there are more
- ``moe.png``            MoE router health (``moe/*`` keys, with or without the trainer's
                         ``actor/`` prefix): routing mismatch with the rollout engine (total,
                         as used, per layer) and the recorded share, load imbalance (per layer,
                         the max, the aux loss), the expert-bias drift, tokens dropped
- ``keys.png``           extra keys asked for with ``keys=`` (fnmatch patterns), one panel each

Curves are drawn smoothed (bias-corrected EMA, as TensorBoard does) over the raw values drawn
faintly. Groups with none of their keys are skipped.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from r1mega.logging.metrics import METRICS_FILE, read_metrics
from r1mega.logging.timers import STAGES

ACTOR_KEYS = ("actor/kl", "actor/entropy", "actor/clip_frac", "actor/grad_norm", "actor/loss", "actor/lr",
              "rollout/logprob_diff_mean", "rollout/logprob_diff_max")
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
          "#7f7f7f", "#bcbd22"]


# -- data ---------------------------------------------------------------------------------------
def series(records: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records holding ``key``; null values become NaN."""
    steps, values = [], []
    for r in records:
        if key in r:
            v = r[key]
            steps.append(r["step"])
            values.append(np.nan if v is None or isinstance(v, str) else float(v))
    return np.asarray(steps, dtype=float), np.asarray(values, dtype=float)


def auto_smoothing(n: int) -> float:
    """EMA weight for ``n`` points: a window of about n/20 points (none for short runs)."""
    span = max(1.0, n / 20)
    return min(0.95, 1 - 2 / (span + 1))


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Bias-corrected exponential moving average; NaN/inf points are skipped (kept as NaN)."""
    out = np.full_like(values, np.nan, dtype=float)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if not np.isfinite(v):
            continue
        acc = weight * acc + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = acc / norm
    return out


def _keys(records: Sequence[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        for k in r:
            if k not in ("step", "ts"):
                seen.setdefault(k, None)
    return list(seen)


# -- drawing ------------------------------------------------------------------------------------
def _line(ax, records, key, color, label=None, smoothing=None, style="-") -> bool:
    steps, values = series(records, key)
    if len(steps) == 0:
        return False
    w = auto_smoothing(len(steps)) if smoothing is None else smoothing
    label = label or key
    if w > 0 and len(steps) > 2:
        ax.plot(steps, values, color=color, alpha=0.25, lw=0.8)
        ax.plot(steps, ema(values, w), color=color, lw=1.8, ls=style, label=label)
    else:
        ax.plot(steps, values, color=color, lw=1.5, ls=style, marker="o" if len(steps) < 30 else None,
                ms=3, label=label)
    return True


def _finish(fig: Figure, title: str, out: Path, legend: bool = True) -> Path:
    fig.suptitle(title, fontsize=12)
    for ax in fig.axes:
        ax.grid(True, alpha=0.3)
        if legend and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def _figure(nrows: int, ncols: int = 1, width: float = 8.0, height: float = 3.0, sharex: bool = True):
    fig = Figure(figsize=(width, height * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def plot_reward_length(records, out: Path, name: str, smoothing=None) -> Path | None:
    keys = _keys(records)
    has_r, has_l = "reward/mean" in keys, "response/len_mean" in keys
    if not (has_r or has_l):
        return None
    fig, axes = _figure(int(has_r) + int(has_l))
    i = 0
    if has_r:
        ax = axes[i]
        _line(ax, records, "reward/mean", COLORS[0], "reward (mean)", smoothing)
        ax.set_ylabel("reward")
        if "acc/mean" in keys:
            _line(ax, records, "acc/mean", COLORS[2], "accuracy", smoothing, style="--")
            ax.set_ylabel("reward / accuracy")
        i += 1
    if has_l:
        ax = axes[i]
        _line(ax, records, "response/len_mean", COLORS[1], "length (mean)", smoothing)
        ax.set_ylabel("response tokens")
    axes[-1].set_xlabel("step")
    return _finish(fig, f"{name}: reward and response length", out)


def plot_reward(records, out: Path, name: str, smoothing=None) -> Path | None:
    keys = _keys(records)
    rkeys = ["reward/mean"] * ("reward/mean" in keys) + sorted(k for k in keys
                                                               if k.startswith("reward/") and k != "reward/mean")
    has_acc = "acc/mean" in keys
    if not rkeys and not has_acc:
        return None
    fig, axes = _figure(int(bool(rkeys)) + int(has_acc))
    if rkeys:
        for j, k in enumerate(rkeys):
            _line(axes[0], records, k, COLORS[j % len(COLORS)], k, smoothing)
        axes[0].set_ylabel("reward")
    if has_acc:
        _line(axes[-1], records, "acc/mean", COLORS[2], "acc/mean", smoothing)
        axes[-1].set_ylabel("accuracy")
    axes[-1].set_xlabel("step")
    return _finish(fig, f"{name}: rewards", out)


def plot_length(records, out: Path, name: str, smoothing=None) -> Path | None:
    keys = _keys(records)
    lkeys = [k for k in ("response/len_mean", "response/len_max") if k in keys]
    has_clip = "response/clip_frac" in keys
    if not lkeys and not has_clip:
        return None
    fig, axes = _figure(int(bool(lkeys)) + int(has_clip))
    if lkeys:
        for j, k in enumerate(lkeys):
            _line(axes[0], records, k, COLORS[1 + j], k.split("/")[1], smoothing)
        axes[0].set_ylabel("response tokens")
    if has_clip:
        _line(axes[-1], records, "response/clip_frac", COLORS[4], "clipped at max length", smoothing)
        axes[-1].set_ylabel("share")
    axes[-1].set_xlabel("step")
    return _finish(fig, f"{name}: response length", out)


def plot_panels(records, keys: Sequence[str], out: Path, title: str, smoothing=None) -> Path | None:
    """One panel per key (two columns when more than three)."""
    if not keys:
        return None
    ncols = 2 if len(keys) > 3 else 1
    nrows = -(-len(keys) // ncols)
    fig, axes = _figure(nrows, ncols, width=6.0 * ncols, height=2.6)
    for j, (ax, k) in enumerate(zip(axes, keys)):
        _line(ax, records, k, COLORS[j % len(COLORS)], k, smoothing)
        ax.set_title(k, fontsize=10)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for i in range(len(axes) - ncols, len(axes)):  # bottom visible panel of each column
        ax = axes[i] if i < len(keys) else axes[i - ncols]
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_xlabel("step")
    return _finish(fig, title, out, legend=False)


def moe_key(keys, name: str) -> str | None:
    """The logged key of ``name`` (e.g. ``moe/imbalance``): the trainer's ``actor/<name>`` if
    present, else ``<name>``; None when neither is."""
    return next((k for k in (f"actor/{name}", name) if k in keys), None)


def moe_layer_keys(keys, stat: str) -> list[tuple[int, str]]:
    """(layer, key) of every ``[actor/]moe/layer{L}/<stat>`` key, by layer; ``actor/`` wins
    when both spellings of a layer are logged."""
    found: dict[int, str] = {}
    pattern = re.compile(rf"^(actor/)?moe/layer(\d+)/{re.escape(stat)}$")
    for k in keys:
        m = pattern.match(k)
        if m and (m.group(1) or int(m.group(2)) not in found):
            found[int(m.group(2))] = k
    return sorted(found.items())


def _layer_lines(ax, records, layers: list[tuple[int, str]], smoothing=None) -> None:
    """One thin curve per layer (smoothed as ``_line``, no faint raw values), first to last layer
    light to dark; labelled each when few, else the first and the last only."""
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    for j, (layer, key) in enumerate(layers):
        steps, values = series(records, key)
        if len(steps) == 0:
            continue
        w = auto_smoothing(len(steps)) if smoothing is None else smoothing
        y = ema(values, w) if w > 0 and len(steps) > 2 else values
        labelled = len(layers) <= 8 or j in (0, len(layers) - 1)
        ax.plot(steps, y, color=cmap(0.9 - 0.8 * j / max(1, len(layers) - 1)), lw=0.8, alpha=0.7,
                label=f"layer {layer}" if labelled else None)


def moe_panels(keys) -> list[dict]:
    """The panels of ``moe.png`` whose keys were logged: dicts of ``title``, ``ylabel``, ``lines``
    ((key, label, color, style) drawn bold by ``_line``), ``layers`` ((layer, key) drawn thin)
    and ``balanced`` (a reference value drawn dotted, or None)."""
    def lines(*spec):
        return [(moe_key(keys, name), label, color, style) for name, label, color, style in spec
                if moe_key(keys, name) is not None]

    panels = [
        dict(title="routing mismatch with the rollout engine (share of tokens)", ylabel="share",
             lines=lines(("moe/route_mismatch", "trainer routers", COLORS[1], "-"),
                         ("moe/route_mismatch_used", "routing used", COLORS[0], "--")),
             layers=moe_layer_keys(keys, "route_mismatch"), balanced=None),
        dict(title="tokens with recorded routing (share)", ylabel="share",
             lines=lines(("rollout/routed_share", "routed share", COLORS[2], "-")), layers=[], balanced=None),
        dict(title="load imbalance: max_i load_i / mean_i load_i (1 = balanced)", ylabel="imbalance",
             lines=lines(("moe/imbalance", "max over layers", COLORS[1], "-"),
                         ("moe/load_balancing_loss", "aux loss E sum f_i P_i", COLORS[4], "--")),
             layers=moe_layer_keys(keys, "imbalance"), balanced=1.0),
        dict(title="expert-bias drift: mean_e |b_e - b0_e|", ylabel="drift",
             lines=lines(("moe/bias_drift", "max over layers", COLORS[1], "-")),
             layers=moe_layer_keys(keys, "bias_drift"), balanced=None),
        dict(title="tokens dropped", ylabel="tokens",
             lines=lines(("moe/tokens_dropped", "dropped", COLORS[3], "-")), layers=[], balanced=None),
    ]
    return [p for p in panels if p["lines"] or p["layers"]]


def plot_moe(records, out: Path, name: str, smoothing=None) -> Path | None:
    """Router health of an MoE run, one panel each (see :func:`moe_panels`): per-layer curves
    thin, the totals bold over them."""
    keys = _keys(records)
    if not any(k.startswith(("moe/", "actor/moe/")) for k in keys):
        return None  # e.g. a dense model's run
    panels = moe_panels(keys)
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, panel in zip(axes, panels):
        _layer_lines(ax, records, panel["layers"], smoothing)
        for key, label, color, style in panel["lines"]:
            _line(ax, records, key, color, label, smoothing, style=style)
        if panel["balanced"] is not None:
            ax.axhline(panel["balanced"], color="black", lw=0.8, ls=":")
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(panel["ylabel"])
    axes[-1].set_xlabel("step")
    return _finish(fig, f"{name}: router health", out)


def plot_time(records, out: Path, name: str) -> Path | None:
    keys = _keys(records)
    stages = [s for s in STAGES if f"time/{s}" in keys]
    stages += [k[5:] for k in keys if k.startswith("time/") and k[5:] not in STAGES and k not in ("time/step", "time/other")]
    stages += ["other"] * ("time/other" in keys)
    if not stages:
        return None
    timed = [r for r in records if any(f"time/{s}" in r for s in stages)]
    steps = np.array([r["step"] for r in timed], dtype=float)
    secs = np.array([[_finite(r.get(f"time/{s}", 0.0)) for r in timed] for s in stages])  # (S, steps)
    total = secs.sum(axis=0)
    share = 100 * secs / np.where(total > 0, total, 1.0)
    colors = [COLORS[i % len(COLORS)] if s != "other" else "#c7c7c7" for i, s in enumerate(stages)]
    fig, axes = _figure(2)
    axes[0].stackplot(steps, secs, labels=stages, colors=colors, alpha=0.85)
    axes[0].set_ylabel("seconds per step")
    axes[1].stackplot(steps, share, colors=colors, alpha=0.85)
    axes[1].set_ylabel("share of step (%)")
    axes[1].set_ylim(0, 100)
    axes[1].set_xlabel("step")
    mean_share = share.mean(axis=1)
    axes[1].set_title("mean: " + ", ".join(f"{s} {m:.0f}%" for s, m in zip(stages, mean_share)), fontsize=9)
    return _finish(fig, f"{name}: step-time breakdown", out)


EVAL_RATES = ("pass@1", "maj@k", "cons@k", "pass@k", "greedy_acc")  # eval/* keys that are rates in [0, 1]


def _is_rate(key: str) -> bool:
    name = key.split("/", 1)[-1]
    return name in EVAL_RATES or name.startswith(("pass@", "maj@", "cons@"))


def _bars(ax, before: dict, after: dict, labels: tuple[str, str]) -> None:
    """Grouped bars of the mean of each metric (in %), before vs after; with several values per
    metric (seeds), each value is a dot and the whisker spans min..max."""
    names = [m for m in before if m in after]
    x = np.arange(len(names))
    width = 0.38
    for j, (vals, label, color) in enumerate(((before, labels[0], "#9fb7d3"), (after, labels[1], COLORS[0]))):
        pos = x + (j - 0.5) * width
        data = [100 * np.asarray(vals[m], dtype=float).ravel() for m in names]
        means = np.array([d.mean() for d in data])
        ax.bar(pos, means, width, color=color, label=label, zorder=2)
        for p, d, m in zip(pos, data, means):
            if len(d) > 1:
                ax.errorbar(p, m, yerr=[[m - d.min()], [d.max() - m]], color="black", capsize=3, lw=1, zorder=3)
                ax.scatter(np.full(len(d), p) + np.linspace(-width / 5, width / 5, len(d)), d, s=12,
                           color="black", zorder=4)
            ax.text(p, 1.5, f"{m:.1f}", ha="center", va="bottom", fontsize=8, zorder=5,
                    color="white" if j else "black")  # the mean, inside the bar's foot
    ax.set_xticks(x, names)
    ax.set_ylim(0, 105)
    ax.set_ylabel("held-out rate (%)")
    ax.grid(axis="y", alpha=0.3, zorder=0)


def eval_rates(records) -> list[tuple[int, dict[str, float]]]:
    """(step, {rate name: value}) of every record holding held-out rates (``eval/pass@1``,
    ``eval/cons@k``, ...), in step order; counts such as ``eval/prompts`` are not rates.
    ``eval/maj@k``, cons@k's former name, is drawn only from logs without ``eval/cons@k``."""
    out = []
    for r in records:
        rates = {k[5:]: float(v) for k, v in r.items()
                 if k.startswith("eval/") and _is_rate(k) and v is not None and not isinstance(v, str)}
        if "cons@k" in rates:
            rates.pop("maj@k", None)
        if rates:
            out.append((int(r["step"]), rates))
    return out


def plot_before_after(before: dict, after: dict, out, *, title: str,
                      labels: tuple[str, str] = ("base", "after RL")) -> Path:
    """Bars of held-out rates before and after training. ``before`` / ``after``: metric ->
    value or list of values (one per seed: drawn as dots with a min..max whisker)."""
    fig, axes = _figure(1, width=7.0, height=3.8)
    _bars(axes[0], before, after, labels)
    return _finish(fig, title, Path(out))


def plot_eval(records, out: Path, name: str) -> Path | None:
    """Held-out rates: the first evaluation (the base, logged at step 0 by ``eval.before_train``)
    against the last as bars, and every evaluation over steps when there are more than two.
    Counts (prompts, samples, k) and lengths are left out: they are not rates."""
    evals = eval_rates(records)
    if not evals:
        return None
    ekeys = [f"eval/{k}" for k in evals[0][1]]
    (s0, first), (s1, last) = evals[0], evals[-1]
    over_time = len(evals) > 2
    fig, axes = _figure(1, ncols=2 if over_time else 1, width=11.0 if over_time else 7.0, height=3.8, sharex=False)
    _bars(axes[0], first, last, (f"step {s0}", f"step {s1}") if len(evals) > 1 else (f"step {s0}", ""))
    if over_time:
        for j, k in enumerate(ekeys):
            steps, values = series(records, k)
            axes[1].plot(steps, 100 * values, marker="o", ms=4, lw=1.2, color=COLORS[j % len(COLORS)], label=k[5:])
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("held-out rate (%)")
        axes[1].set_ylim(0, 105)
    return _finish(fig, f"{name}: held-out evaluation", out)


def plot_stages(stages: Sequence[str], metrics: dict, out, *, title: str) -> Path:
    """One line per metric across pipeline stages (e.g. the R1 chain). ``metrics``: name -> one
    value per stage, or one list of values (seeds) per stage: the line is their mean, the band
    their min..max."""
    fig, axes = _figure(1, width=max(7.0, 1.3 * len(stages)), height=4.0)
    ax = axes[0]
    x = np.arange(len(stages))
    for j, (name, per_stage) in enumerate(metrics.items()):
        vals = [100 * np.asarray(v if v is not None else np.nan, dtype=float).ravel() for v in per_stage]
        means = np.array([np.nanmean(v) if np.isfinite(v).any() else np.nan for v in vals])
        color = COLORS[j % len(COLORS)]
        ax.plot(x, means, marker="o", lw=1.6, color=color, label=name)
        if any(len(v) > 1 for v in vals):
            lo = np.array([np.nanmin(v) if np.isfinite(v).any() else np.nan for v in vals])
            hi = np.array([np.nanmax(v) if np.isfinite(v).any() else np.nan for v in vals])
            ax.fill_between(x, lo, hi, color=color, alpha=0.15, lw=0)
    ax.set_xticks(x, stages, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("held-out rate (%)")
    ax.set_ylim(0, 105)
    ax.grid(alpha=0.3)
    return _finish(fig, title, Path(out))


def _finite(v) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return 0.0
    return v if np.isfinite(v) else 0.0


# -- entry point --------------------------------------------------------------------------------
def plot_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    keys: Sequence[str] = (),
    smoothing: float | None = None,
) -> list[Path]:
    """Write the PNGs for ``run_dir/metrics.jsonl`` (or a metrics file) into ``out_dir``
    (default ``run_dir/plots``); returns their paths. ``smoothing``: EMA weight in [0, 1)
    (``None``: chosen from the number of steps; 0: raw only)."""
    src = Path(run_dir)
    metrics_path = src / METRICS_FILE if src.is_dir() else src
    run_root = metrics_path.parent
    records = read_metrics(metrics_path)
    if not records:
        raise ValueError(f"{metrics_path} holds no records: nothing to plot (did the run log any step?)")
    if smoothing is not None and not 0 <= smoothing < 1:
        raise ValueError(f"smoothing ({smoothing}) must be in [0, 1)")
    records = sorted(records, key=lambda r: r["step"])
    out = Path(out_dir) if out_dir is not None else run_root / "plots"
    out.mkdir(parents=True, exist_ok=True)
    name = run_root.name or "run"
    all_keys = _keys(records)
    extra = [k for k in all_keys if any(fnmatch.fnmatchcase(k, p) for p in keys)]
    if keys and not extra:
        raise ValueError(f"no metric matches keys={list(keys)}; present: {', '.join(all_keys)}")
    written = [
        plot_reward_length(records, out / "reward_length.png", name, smoothing),
        plot_reward(records, out / "reward.png", name, smoothing),
        plot_length(records, out / "length.png", name, smoothing),
        plot_panels(records, [k for k in ACTOR_KEYS if k in all_keys], out / "actor.png",
                    f"{name}: policy update", smoothing),
        plot_time(records, out / "time.png", name),
        plot_eval(records, out / "eval.png", name),
        plot_moe(records, out / "moe.png", name, smoothing),
        plot_panels(records, extra, out / "keys.png", f"{name}: selected metrics", smoothing),
    ]
    return [p for p in written if p is not None]
