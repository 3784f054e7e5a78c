#!/usr/bin/env bash
# Sets up the environment, then runs the whole test suite (CPU; GPU tests skip with a reason).
# Extra arguments go to pytest (e.g. -k kernels, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# Two pytest-xdist workers on a 2-core machine (at most 4 elsewhere: many tests start 2-3
# processes of their own), one test file per worker at a time, the longest files first
# (tests/conftest.py's order; xdist would otherwise start the files with the most tests first);
# R1MEGA_TEST_WORKERS=0 runs serially.
workers="${R1MEGA_TEST_WORKERS:-$(nproc)}"
(( workers > 4 )) && workers=4
if (( workers > 1 )); then
  exec "${R1MEGA_VENV:-.venv}/bin/python" -m pytest -q -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
fi
exec "${R1MEGA_VENV:-.venv}/bin/python" -m pytest -q "$@"
