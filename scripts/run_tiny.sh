#!/usr/bin/env bash
# The embedded tiny default: sets up the environment, then runs R1-Zero end to end on this
# machine's CPU (tokenizer -> tiny Qwen2 pretraining to a target -> eval -> GRPO -> eval), ~8-11 minutes.
# Results: runs/tiny/summary.json and runs/tiny/*.png. Extra arguments go to `r1mega tiny`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec "${R1MEGA_VENV:-.venv}/bin/r1mega" tiny --out runs/tiny "$@"
