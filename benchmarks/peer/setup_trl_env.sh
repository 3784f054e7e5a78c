#!/usr/bin/env bash
# The TRL environment of the peer benchmark, apart from r1mega's: .venv-trl in the repository
# (R1MEGA_PEER_VENV elsewhere). torch stays the CPU build r1mega uses (2.13.0, installed first and
# held by a constraint); a dry run checks that resolving TRL's requirements pulls no CUDA wheel
# (nvidia-*, a second torch, triton) before anything else is installed. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV="${R1MEGA_PEER_VENV:-.venv-trl}"
REQ=benchmarks/peer/requirements-trl.txt
stamp="$VENV/.r1mega-peer-env"
want="$(cat "$REQ" "$0" | sha256sum | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "peer benchmark: setting up $VENV (TRL; a few minutes the first time)" >&2
"${PYTHON:-python3}" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" "torch==2.13.0"
constraints="$(mktemp)"; report="$(mktemp)"
trap 'rm -f "$constraints" "$report"' EXIT
echo "torch==2.13.0" > "$constraints"
"${PIP[@]}" --dry-run --report "$report" -r "$REQ" -c "$constraints"
"$VENV/bin/python" - "$report" <<'PY'
import json, sys
names = sorted(i["metadata"]["name"].lower() for i in json.load(open(sys.argv[1]))["install"])
bad = [n for n in names if n.startswith(("nvidia-", "cuda-")) or n in ("torch", "triton", "pytorch-triton")]
if bad:
    sys.exit(f"peer benchmark: TRL's requirements would pull {bad} (CUDA wheels or a second torch); "
             f"nothing was installed past torch 2.13.0 (CPU)")
print(f"peer benchmark: dry run clean: {len(names)} packages, no CUDA wheel, torch kept", file=sys.stderr)
PY
"${PIP[@]}" -r "$REQ" -c "$constraints"
"$VENV/bin/python" -c "import torch, trl; assert torch.version.cuda is None, torch.version.cuda; print('trl', trl.__version__, 'torch', torch.__version__)"
echo "$want" > "$stamp"
