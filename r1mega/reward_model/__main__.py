"""``python -m r1mega.reward_model CONFIG --pairs FILE ...``: the ``train-rm`` command, runnable
with ``torchrun -m`` whether or not ``r1mega`` wires it."""

from __future__ import annotations

import argparse
import sys


def parse(argv: list[str]) -> argparse.Namespace:
    """The ``train-rm`` arguments; ``key=value`` overrides may also follow the options (as in r1mega.cli)."""
    from r1mega.reward_model.cmd import add_parser

    p = argparse.ArgumentParser(prog="python -m r1mega.reward_model")
    add_parser(p.add_subparsers(dest="command", required=True))
    args, extra = p.parse_known_args(["train-rm", *argv])
    bad = [a for a in extra if a.startswith("-") or "=" not in a]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(args.overrides or []) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    from r1mega.config import ConfigError
    from r1mega.data.prompts import DataError
    from r1mega.logging.console import setup_logging

    setup_logging()
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        return args.fn(args)
    except (ConfigError, DataError) as e:
        kind = "config" if isinstance(e, ConfigError) else "data"
        print(f"r1mega train-rm: {kind} error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
