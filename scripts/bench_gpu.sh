#!/usr/bin/env bash
# The GPU checks and kernel tables, for a machine with an H100/H200 (or any CUDA GPU).
#
#   bash scripts/bench_gpu.sh [PART ...] [--out DIR]
#
# PART: tests (the kernels' GPU tests, run first: numbers from wrong kernels are worthless),
#       logprob_fwd, logprob_fwdbwd, grpo_fwdbwd, grpo_loss, or all (default). Each table part runs
#       T = 4K, 16K, 64K x V = 32K, 129,280, 151,936 at H = 4096 in bf16, one subprocess per config;
#       run the parts in separate calls where one call has a time limit.
# Needs only python3 with torch, triton and pytest: r1mega_kernels is put on PYTHONPATH from
# kernels/ without installing anything. Results: DIR/<gpu>_<part>.{json,md} (default
# benchmarks/results), with the date, GPU, torch and triton versions inside.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
out=benchmarks/results
parts=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    tests|logprob_fwd|logprob_fwdbwd|grpo_fwdbwd|grpo_loss|all) parts+=("$1"); shift ;;
    *) echo "bench_gpu.sh: unknown argument '$1' (parts: tests logprob_fwd logprob_fwdbwd grpo_fwdbwd grpo_loss all; --out DIR)" >&2; exit 2 ;;
  esac
done
[ ${#parts[@]} -eq 0 ] && parts=(all)
[ "${parts[*]}" = all ] && parts=(tests logprob_fwd logprob_fwdbwd grpo_fwdbwd grpo_loss)

shim=$(mktemp -d)
ln -s "$PWD/kernels" "$shim/r1mega_kernels"
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TRITON_DEFAULT_FP_FUSION=1
"$PY" -c "import torch, sys; torch.cuda.is_available() or sys.exit('bench_gpu.sh needs a CUDA GPU; on CPU use tools/bench_kernels.py --device cpu')"
gpu=$("$PY" -c "import re, torch; print(re.sub('[^a-z0-9]+', '_', torch.cuda.get_device_name().lower()).strip('_'))")
mkdir -p "$out"
for part in "${parts[@]}"; do
  echo "== $part ($gpu)"
  case "$part" in
    tests) "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_linear_logprob.py tests/test_kernels_grpo.py ;;
    grpo_loss) "$PY" tools/bench_kernels.py --device cuda --ops grpo_loss --tokens 1048576 4194304 --vocab 32 \
                 --hidden 16 --name "${gpu}_grpo_loss" --out-dir "$out" ;;
    *) "$PY" tools/bench_kernels.py --device cuda --ops "$part" --name "${gpu}_${part}" --out-dir "$out" ;;
  esac
done
