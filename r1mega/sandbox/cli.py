"""``r1mega sandbox [options] -- CMD [ARGS...]``: run a command in the code sandbox.

    r1mega sandbox -- python3 - < prog.py                      # stdin passes through
    r1mega sandbox --file sol.cpp --time-limit 10 -- g++ -O2 -o sol sol.cpp
    r1mega sandbox --json --time-limit 2 -- python3 -c "while True: pass"

CMD runs in ``/scratch`` (the ``--file`` copies are there) with the limits given; the command
(an interpreter or compiler found on the host's PATH) and its install prefix are bound read-only.
The exit status is CMD's, 124 on the time limit, 128+N on signal N, and 125 when the sandbox
itself could not run it (no user namespaces: the message says why). ``--json`` prints one
result object instead (status, exit code, signal, wall and CPU seconds, peak memory, truncated
flags, stdout, stderr) and exits 0 unless the sandbox failed. The Python API is
:func:`r1mega.sandbox.run.run_sandboxed`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_parser(sub) -> None:
    t = sub.add_parser("sandbox", help="run a command in the code sandbox (namespaces, rlimits, seccomp)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--time-limit", type=float, default=10.0, metavar="S", help="wall-clock limit in seconds")
    t.add_argument("--memory-mb", type=int, default=1024, metavar="MB", help="address-space limit")
    t.add_argument("--output-limit-kb", type=int, default=1024, metavar="KB",
                   help="bytes kept of stdout and of stderr each (the rest is read and dropped)")
    t.add_argument("--file", action="append", default=[], metavar="SRC[:NAME]",
                   help="copy SRC into the scratch directory first (as NAME); repeatable")
    t.add_argument("--json", action="store_true", help="print one JSON result object instead of the output")
    t.add_argument("--unisolated", action="store_true",
                   help="DANGEROUS: run without namespaces or seccomp where user namespaces are unavailable "
                        "(rlimits, output cap and time limit only)")
    t.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    t.set_defaults(fn=cmd_sandbox)


def _files(specs: list[str]) -> dict[str, bytes]:
    from r1mega.config.base import ConfigError

    out = {}
    for spec in specs:
        src, name = spec, os.path.basename(spec)
        head, sep, tail = spec.rpartition(":")
        if sep and tail and os.sep not in tail:  # SRC:NAME (the launcher's --file reads it the same way)
            src, name = head, tail
        try:
            with open(src, "rb") as f:
                out[name] = f.read()
        except OSError as e:
            raise ConfigError(f"--file {spec}: {e.strerror}") from None
    return out


def cmd_sandbox(args) -> int:
    from r1mega.config.base import ConfigError
    from r1mega.sandbox.run import run_sandboxed

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise ConfigError("r1mega sandbox: no command; usage: r1mega sandbox [options] -- CMD [ARGS...]")
    stdin = None if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    try:
        res = run_sandboxed(command, stdin=stdin, files=_files(args.file), time_limit_s=args.time_limit,
                            memory_mb=args.memory_mb, output_limit_bytes=args.output_limit_kb * 1024,
                            unisolated=args.unisolated)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from None
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
        return 125 if res.infrastructure_error else 0
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.stdout_truncated or res.stderr_truncated:
        print(f"r1mega sandbox: output truncated at {args.output_limit_kb} KB", file=sys.stderr)
    if res.infrastructure_error:
        print(f"r1mega sandbox: {res.error}", file=sys.stderr)
    return res.exit_code
