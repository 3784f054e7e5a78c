"""Per-benchmark evaluation tables, the way DeepSeek-R1 reports them. Pure Python.

    benchmark  prompts   k  pass@1  cons@k  pass@k  greedy  mean len
    math500        500  16   72.4%   80.2%   91.0%   70.0%    3120.5
    gsm8k         1319  16   90.1%   93.0%   97.2%       -     410.2
    all           1819  16   85.2%   89.5%   95.5%       -    1155.2

Each row holds :func:`r1mega.eval.metrics.summarize`'s metrics of one benchmark (cons@k: the
majority vote over answers grouped by the verifier's equivalence). The ``all`` row pools the
prompts of every benchmark: pass@1, cons@k, pass@k, the greedy accuracy and the held-out reward
(``reward``, ``reward/<name>``: in the JSON, not the table) are means over prompts, so pooling
weighs each benchmark by its prompt count; the mean length is weighed by samples. Rates print as
percentages with one decimal, a missing one as ``-``.
"""

from __future__ import annotations

from typing import Mapping

COLUMNS = (("prompts", "prompts"), ("k", "k"), ("pass@1", "pass@1"), ("cons@k", "cons@k"), ("pass@k", "pass@k"),
           ("greedy", "greedy_acc"), ("mean len", "mean_response_len"), ("unscored", "scoring_errors"))
"""(header, metrics key) of each column; ``unscored`` (responses whose reward failed) shows only
when some benchmark has one."""


def pool(per_benchmark: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The ``all`` row: every benchmark's prompts pooled (see the module docstring)."""
    rows = [m for m in per_benchmark.values() if m.get("prompts")]
    if not rows:
        return {}
    out: dict[str, float] = {"prompts": sum(m["prompts"] for m in rows), "samples": sum(m["samples"] for m in rows)}
    ks = {m["k"] for m in rows}
    if len(ks) == 1:
        out["k"] = ks.pop()
    parts = sorted({k for m in rows for k in m if k.startswith("reward/")})
    for key in ("pass@1", "cons@k", "maj@k", "pass@k", "greedy_acc", "reward", *parts):
        have = [m for m in rows if key in m]
        if len(have) == len(rows):
            out[key] = sum(m[key] * m["prompts"] for m in have) / out["prompts"]
    if any("scoring_errors" in m for m in rows):
        out["scoring_errors"] = sum(m.get("scoring_errors", 0) for m in rows)
    if all("mean_response_len" in m for m in rows):
        out["mean_response_len"] = sum(m["mean_response_len"] * m["samples"] for m in rows) / out["samples"]
    return out


COUNTS = ("prompts", "samples", "k", "scoring_errors")


def as_json(per_benchmark: Mapping[str, Mapping[str, float]]) -> dict:
    """``{"benchmarks": {name: metrics}, "all": pooled}`` with the counts (prompts, samples, k) as integers."""
    def clean(m: Mapping[str, float]) -> dict:
        return {key: int(v) if key in COUNTS else v for key, v in m.items()}

    return {"benchmarks": {name: clean(m) for name, m in per_benchmark.items()}, "all": clean(pool(per_benchmark))}


def _cell(key: str, value: float | None) -> str:
    if value is None:
        return "-"
    if key in ("prompts", "k", "scoring_errors"):
        return str(int(value))
    if key == "mean_response_len":
        return f"{value:.1f}"
    return f"{100 * value:.1f}%"


def scoring_warning(per_benchmark: Mapping[str, Mapping[str, float]]) -> str | None:
    """A warning naming the benchmarks with responses whose reward failed (None when there are none)."""
    bad = {name: int(m["scoring_errors"]) for name, m in per_benchmark.items() if m.get("scoring_errors")}
    if not bad:
        return None
    where = ", ".join(f"{name}: {n} of {int(per_benchmark[name]['samples'])}" for name, n in bad.items())
    return (f"WARNING: responses whose reward failed or timed out ({where}) are counted as wrong, so these "
            f"numbers understate the model: the log names each cause (for code, a sandbox that could not start "
            f"is `r1mega sandbox -- true`'s error); fix it and evaluate again")


def format_table(per_benchmark: Mapping[str, Mapping[str, float]], *, with_all: bool = True) -> str:
    """Fixed-width table, one row per benchmark (plus ``all`` when there are several)."""
    rows = dict(per_benchmark)
    if with_all and len(rows) > 1:
        rows["all"] = pool(per_benchmark)
    def shown(key: str) -> bool:  # "unscored" only when nonzero
        return any(m.get(key) if key == "scoring_errors" else key in m for m in rows.values())

    cols = [(h, k) for h, k in COLUMNS if shown(k)]
    cells = [["benchmark"] + [h for h, _ in cols]]
    cells += [[name] + [_cell(k, m.get(k)) for _, k in cols] for name, m in rows.items()]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in cells)
