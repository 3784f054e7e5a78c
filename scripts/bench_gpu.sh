#!/usr/bin/env bash
# The GPU checks: the trainer's step and the kernel tables, for a machine with an H100/H200 (or any
# CUDA GPU) that has python3 with torch, triton, transformers and pytest but no network.
#
#   bash scripts/bench_gpu.sh --prepare          # here, with network: megatron-core's wheel -> .whl/
#   bash scripts/bench_gpu.sh [PART ...] [--out DIR]   # there, carrying .whl (device tool: carry [".whl"])
#   bash scripts/bench_gpu.sh --smoke [--out DIR]      # CPU, tiny shapes, every part's code path (the suite runs it)
#
# PART: tests     the kernels' GPU tests, first: numbers from wrong kernels are worthless (~1-2 min)
#       trainer   r1mega's Megatron policy vs a transformers + torch eager step on a random
#                 Qwen2.5-1.5B in bf16, TP=1, Triton LM head: SFT and RL step time, tokens/s, MFU,
#                 peak memory, LM-head share; fails if the two systems' first losses disagree
#                 (tools/bench_trainer.py; ~2-3 min)
#       logprob_fwd, logprob_fwdbwd, grpo_fwdbwd: kernel tables, T = 4K, 16K, 64K x V = 32K, 129,280,
#                 151,936 at H = 4096 in bf16, one subprocess per config (tools/bench_kernels.py;
#                 several minutes each)
#       grpo_loss the standalone GRPO loss kernel at 1M and 4M tokens
#       all       (default) every part, in that order
# One lent device's 15 minutes hold two calls of <= 9 minutes each: first
#   bash scripts/bench_gpu.sh tests trainer logprob_fwd
# then, if time is left, `bash scripts/bench_gpu.sh logprob_fwdbwd grpo_fwdbwd grpo_loss`.
# r1mega and r1mega_kernels are put on PYTHONPATH from this checkout; megatron-core comes from
# .whl/ (installed into a temporary folder, no network) when python3 lacks it. Results:
# DIR/<gpu>_<part>.{json,md} (default benchmarks/results), with the date, GPU and versions inside.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MCORE=megatron-core==0.16.1   # the version pyproject.toml's extras pin
out=""
parts=()
mode=gpu
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --smoke) mode=smoke; shift ;;
    --prepare) mode=prepare; shift ;;
    tests|trainer|logprob_fwd|logprob_fwdbwd|grpo_fwdbwd|grpo_loss|all) parts+=("$1"); shift ;;
    *) echo "bench_gpu.sh: unknown argument '$1' (parts: tests trainer logprob_fwd logprob_fwdbwd grpo_fwdbwd" \
            "grpo_loss all; --out DIR, --smoke, --prepare)" >&2; exit 2 ;;
  esac
done

if [ $mode = prepare ]; then
  # The device's python is CPython 3.12 on x86-64 with torch, numpy and packaging (megatron-core's
  # only needs): fetch that one wheel, no dependencies, binary only (nothing can pull a CUDA torch).
  mkdir -p .whl   # ignored by .gitignore; the device tool carries it when asked to
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$MCORE"
  ls -l .whl
  echo "bench_gpu.sh --prepare: done; carry .whl to the device (device tool: carry [\".whl\"])"
  exit 0
fi

[ ${#parts[@]} -eq 0 ] && parts=(all)
[ "${parts[*]}" = all ] && parts=(tests trainer logprob_fwd logprob_fwdbwd grpo_fwdbwd grpo_loss)
if [ $mode = smoke ]; then
  out=${out:-$(mktemp -d)}
else
  out=${out:-benchmarks/results}
fi

shim=$(mktemp -d)
trap 'rm -rf "$shim"' EXIT
ln -s "$PWD/kernels" "$shim/r1mega_kernels"
export PYTHONPATH="$shim:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
if [ $mode = gpu ]; then
  "$PY" -c "import torch, sys; torch.cuda.is_available() or sys.exit('bench_gpu.sh needs a CUDA GPU; on CPU run it with --smoke')"
  gpu=$("$PY" -c "import re, torch; print(re.sub('[^a-z0-9]+', '_', torch.cuda.get_device_name().lower()).strip('_'))")
else
  gpu=smoke
fi
if [[ " ${parts[*]} " == *" trainer "* ]] && ! "$PY" -c "import megatron.core" 2>/dev/null; then
  ls .whl/megatron_core-*.whl >/dev/null 2>&1 \
    || { echo "bench_gpu.sh: megatron-core is not installed and .whl/ has no wheel of it: run 'bash scripts/bench_gpu.sh --prepare' where there is network, and carry .whl" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$shim/site" .whl/megatron_core-*.whl
  export PYTHONPATH="$PYTHONPATH:$shim/site"
fi
# --smoke runs the Triton backends too, in the interpreter (tiny shapes: ~1 ms per program and block)
smoke_backends=(eager torch_chunked)
"$PY" -c "import triton" 2>/dev/null && smoke_backends+=(triton triton:gemm triton:fused_atomic)
mkdir -p "$out"
for part in "${parts[@]}"; do
  echo "== $part ($gpu)"
  case "$mode:$part" in
    smoke:tests) echo "(--smoke: the kernel tests run in the CPU suite; on a GPU this part runs their CUDA cases)" ;;
    gpu:tests) "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_linear_logprob.py tests/test_kernels_grpo.py ;;
    smoke:trainer) "$PY" tools/bench_trainer.py --smoke --name smoke_trainer --out "$out" ;;
    gpu:trainer) "$PY" tools/bench_trainer.py --device cuda --model qwen2.5-1.5b --name "${gpu}_trainer" --out "$out" ;;
    smoke:grpo_loss) TRITON_INTERPRET=1 "$PY" tools/bench_kernels.py --device cpu --ops grpo_loss --tokens 512 --vocab 32 \
                       --hidden 16 --backends "${smoke_backends[@]}" --in-process --warmup 0 --repeats 1 --name smoke_grpo_loss --out-dir "$out" ;;
    gpu:grpo_loss) "$PY" tools/bench_kernels.py --device cuda --ops grpo_loss --tokens 1048576 4194304 --vocab 32 \
                     --hidden 16 --name "${gpu}_grpo_loss" --out-dir "$out" ;;
    smoke:*) TRITON_INTERPRET=1 "$PY" tools/bench_kernels.py --device cpu --ops "$part" --tokens 64 --vocab 256 --hidden 32 \
               --backends "${smoke_backends[@]}" --check --in-process --warmup 0 --repeats 1 --name "smoke_${part}" --out-dir "$out" ;;
    gpu:*) "$PY" tools/bench_kernels.py --device cuda --ops "$part" --name "${gpu}_${part}" --out-dir "$out" ;;
  esac
done
echo "bench_gpu.sh: results in $out"
