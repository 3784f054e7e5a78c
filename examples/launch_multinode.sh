#!/usr/bin/env bash
# Multi-node launch with torchrun's c10d rendezvous. Run the same command on every node:
#
#   MASTER_ADDR=node0 NNODES=4 bash examples/launch_multinode.sh examples/qwen2.5_7b_gsm8k.yaml \
#       parallel.tensor=4 parallel.rollout_tensor=4 data.prompts_per_step=128
#
# Every node starts NPROC_PER_NODE processes (one per GPU); torchrun sets RANK / WORLD_SIZE /
# LOCAL_RANK, and r1mega builds every process group from them (NCCL on GPUs, gloo on CPUs).
set -euo pipefail
CONFIG="${1:?usage: launch_multinode.sh CONFIG [key=value ...]}"; shift
: "${MASTER_ADDR:?set MASTER_ADDR to the first node's hostname or IP}"
MASTER_PORT="${MASTER_PORT:-29500}"
NNODES="${NNODES:-2}"
NPROC_PER_NODE="${NPROC_PER_NODE:-8}"
RDZV_ID="${RDZV_ID:-${SLURM_JOB_ID:-r1mega}}"

# NCCL settings users commonly need (adjust to the fabric):
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}"              # 1 if there is no InfiniBand
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker}" # the inter-node interface
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"
export CUDA_DEVICE_MAX_CONNECTIONS=1                           # Megatron TP/SP overlap
export VLLM_ENABLE_V1_MULTIPROCESSING=0                        # in-process colocated engine

exec torchrun --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" \
  --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID" \
  -m r1mega.cli train "$CONFIG" "$@"
