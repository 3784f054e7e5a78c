#!/usr/bin/env bash
# Sets up the environment, then runs the whole test suite (CPU; GPU tests skip with a reason).
# Extra arguments go to pytest (e.g. -k kernels, -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${R1MEGA_VENV:-.venv}/bin/python" -m pytest -q "$@"
