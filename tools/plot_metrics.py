"""Plot a run's metrics.jsonl as PNGs.

    python tools/plot_metrics.py runs/my_run                 # -> runs/my_run/plots/*.png
    python tools/plot_metrics.py runs/my_run --out figs --keys 'reward/*' actor/lr

Writes reward_length.png (the README figure), reward.png, length.png, actor.png, time.png and
eval.png for the metric groups present (see r1mega/logging/plots.py), and keys.png when --keys
is given. Also importable: ``from tools.plot_metrics import plot_run`` (same as
``r1mega.logging.plots.plot_run``).
"""

from __future__ import annotations

import argparse
import sys

from r1mega.logging.plots import plot_run

__all__ = ["plot_run", "main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="run directory holding metrics.jsonl (or the metrics.jsonl itself)")
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR/plots)")
    p.add_argument("--keys", nargs="+", default=(), metavar="KEY",
                   help="also plot these metrics (fnmatch patterns such as 'reward/*'), one panel each, in keys.png")
    p.add_argument("--smoothing", type=float, default=None,
                   help="EMA weight in [0, 1); default chosen from the number of steps, 0 = raw only")
    args = p.parse_args(argv)
    try:
        paths = plot_run(args.run_dir, args.out, keys=args.keys, smoothing=args.smoothing)
    except (FileNotFoundError, ValueError) as e:
        print(f"plot_metrics: error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
