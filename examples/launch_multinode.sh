#!/usr/bin/env bash
# Multi-node r1mega: one torchrun per node, joined by torchrun's c10d rendezvous.
# Run the same command on every node (examples/slurm_r1mega.sbatch does it under Slurm):
#
#   MASTER_ADDR=node0 NNODES=4 NODE_RANK=<0..3> bash examples/launch_multinode.sh \
#       examples/qwen2.5_7b_gsm8k.yaml parallel.tensor=4 parallel.rollout_tensor=4 data.prompts_per_step=128
#
# Check the layout and the memory first (no GPU needed): r1mega plan CONFIG [overrides] --nodes N.
#
# Every node starts NPROC_PER_NODE processes (one per GPU); torchrun sets RANK, WORLD_SIZE and
# LOCAL_RANK and r1mega builds every process group from them (NCCL on GPUs, gloo on CPUs).
# With the c10d backend (default) the rendezvous store lives on MASTER_ADDR:MASTER_PORT and
# nodes get their group rank in order of arrival, so NODE_RANK does not matter; with
# RDZV_BACKEND=static it does (0 on MASTER_ADDR, then 1..NNODES-1).
#
# Environment (defaults in brackets):
#   MASTER_ADDR      rendezvous host: the first node's hostname or IP [required]
#   MASTER_PORT      rendezvous port [29500]
#   NNODES           nodes in the job [2]; NPROC_PER_NODE GPUs per node [8]
#   NODE_RANK        this node's index [0]; RDZV_BACKEND c10d|static [c10d]; RDZV_ID job id [$SLURM_JOB_ID]
#   NCCL_SOCKET_IFNAME  NIC for NCCL bootstrap / socket traffic, e.g. eth0, ib0 [^lo,docker]
#   GLOO_SOCKET_IFNAME  NIC for gloo (CPU groups) [NCCL_SOCKET_IFNAME when it names an interface]
#   NCCL_IB_HCA      InfiniBand HCAs to use, e.g. mlx5_0,mlx5_1 [NCCL's choice]
#   NCCL_DEBUG       WARN (INFO to debug hangs) [WARN]
#   OMP_NUM_THREADS  CPU threads per process [physical cores / NPROC_PER_NODE]
#   PYTHON           interpreter that has r1mega installed [python]
set -euo pipefail
CONFIG="${1:?usage: launch_multinode.sh CONFIG [key=value ...]}"; shift
: "${MASTER_ADDR:?set MASTER_ADDR to the hostname or IP of the first node}"
MASTER_PORT="${MASTER_PORT:-29500}"
NNODES="${NNODES:-2}"
NPROC_PER_NODE="${NPROC_PER_NODE:-8}"
NODE_RANK="${NODE_RANK:-0}"
RDZV_BACKEND="${RDZV_BACKEND:-c10d}"
RDZV_ID="${RDZV_ID:-${SLURM_JOB_ID:-r1mega}}"
PYTHON="${PYTHON:-python}"

# Networking. NCCL takes an exclusion list ("^lo,docker"); gloo needs one interface name.
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-^lo,docker}"
if [[ -z "${GLOO_SOCKET_IFNAME:-}" && "$NCCL_SOCKET_IFNAME" != ^* ]]; then
  export GLOO_SOCKET_IFNAME="$NCCL_SOCKET_IFNAME"
fi
export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
export NCCL_IB_DISABLE="${NCCL_IB_DISABLE:-0}"                    # 1 on Ethernet-only clusters
export TORCH_NCCL_ASYNC_ERROR_HANDLING="${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}"  # a failed rank ends the job
export CUDA_DEVICE_MAX_CONNECTIONS=1                              # Megatron TP/SP communication overlap order
export VLLM_ENABLE_V1_MULTIPROCESSING=0                           # the colocated engine runs in-process
if [[ -z "${OMP_NUM_THREADS:-}" ]]; then
  cores=$(nproc 2>/dev/null || echo "$NPROC_PER_NODE")
  export OMP_NUM_THREADS=$(( cores / NPROC_PER_NODE > 0 ? cores / NPROC_PER_NODE : 1 ))
fi

rdzv=(--rdzv-backend "$RDZV_BACKEND" --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$RDZV_ID")
if [[ "$RDZV_BACKEND" == static ]]; then
  rdzv+=(--node-rank "$NODE_RANK")
fi
echo "[launch_multinode] node $NODE_RANK/$NNODES on $(hostname): $NPROC_PER_NODE processes, rendezvous" \
     "$RDZV_BACKEND at $MASTER_ADDR:$MASTER_PORT (id $RDZV_ID); NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME" \
     "GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-<auto>} NCCL_IB_HCA=${NCCL_IB_HCA:-<auto>}" \
     "OMP_NUM_THREADS=$OMP_NUM_THREADS" >&2
exec "$PYTHON" -m torch.distributed.run --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" "${rdzv[@]}" \
  -m r1mega.cli train "$CONFIG" "$@"
