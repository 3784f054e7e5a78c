"""Benchmark trainer -> rollout weight sync: the gather path vs the direct path, vs memcpy.

    python tools/bench_weight_sync.py --tp 2 --out bench_weight_sync.json   # launches torchrun itself
    python tools/bench_weight_sync.py --tp 2 --hidden 1024 --layers 8 --vocab 32001 --syncs 5

Every rank holds a Megatron shard (trainer TP = ``--tp``, PP = 1) and, colocated, its vLLM
shard (rollout TP = ``--tp``), as in the RL loop. Each sync is timed end to end (both paths
reset the prefix cache; on CPU both repack linear weights for oneDNN). The memcpy bound is the
bytes this rank writes into its vLLM shard divided by this machine's ``dst.copy_(src)``
bandwidth (:func:`bench_rollout.copy_bandwidth`): no sync can beat one pass over its shard.
Rank 0 writes the JSON (all ranks' numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

TOOLS = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tp", type=int, default=2, help="trainer TP = rollout TP = number of processes")
    ap.add_argument("--model", help="HF model directory (default: build a random Qwen2)")
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=32001, help="odd by default: vLLM's and Megatron's padding differ")
    ap.add_argument("--tie", action="store_true", help="tie word embeddings")
    ap.add_argument("--bucket-mb", type=float, default=64.0, help="gather path bucket size")
    ap.add_argument("--syncs", type=int, default=3, help="timed syncs per path (after one warm-up each)")
    ap.add_argument("--kv-mb", type=int, default=64)
    ap.add_argument("--out", default="bench_weight_sync.json")
    return ap.parse_args(argv)


def launch(args: argparse.Namespace) -> int:
    """Not under torchrun: build the model once, then run this script on ``--tp`` processes."""
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    with tempfile.TemporaryDirectory(prefix="bench_weight_sync_") as tmp:
        model = args.model or build_tiny_qwen2(
            tmp, hidden=args.hidden, heads=args.hidden // 64, kv_heads=args.tp * max(1, args.hidden // 64 // (4 * args.tp)),
            layers=args.layers, intermediate=4 * args.hidden, vocab_size=args.vocab, tie_embeddings=args.tie)
        argv = [*sys.argv[1:], "--model", model]
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={args.tp}",
               "--master-addr=127.0.0.1", f"--master-port={_free_port()}", os.path.abspath(__file__), *argv]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        return subprocess.call(cmd, env=env)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: argparse.Namespace) -> None:
    """One rank: trainer shard + colocated engine; time ``--syncs`` syncs of each path."""
    import torch.distributed as dist

    sys.path.insert(0, TOOLS)
    from bench_rollout import copy_bandwidth

    from r1mega.config.sections import ModelConfig, ParallelConfig, RolloutConfig
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.rollout import RolloutEngine

    arch = read_hf_config(args.model)
    layout = init_parallel(ParallelConfig(tensor=args.tp, rollout_tensor=args.tp), arch, seed=1)
    chunks, arch = load_hf(args.model, ModelConfig(), layout)
    cfg = RolloutConfig(max_new_tokens=4, max_model_len=128, kv_cache_memory_mb=args.kv_mb,
                        sync_bucket_mb=args.bucket_mb)
    engine = RolloutEngine(args.model, cfg, rollout_tensor=args.tp, skip_tokenizer=True)
    version, mine = 0, {}
    for mode in ("gather", "direct"):
        times, stats = [], None
        for i in range(args.syncs + 1):
            version += 1
            dist.barrier()
            t = time.perf_counter()
            stats = engine.sync_policy(chunks, arch, version, mode=mode, bucket_bytes=int(args.bucket_mb * (1 << 20)))
            dist.barrier()
            if i:  # the first sync of each path is a warm-up
                times.append(time.perf_counter() - t)
        mine[mode] = {"seconds_median": statistics.median(times), "seconds_all": times,
                      "bytes": stats.total_bytes, "tensors": stats.num_tensors, "path": stats.path,
                      "exchanged_bytes": stats.exchanged_bytes, "peak_bytes": stats.peak_bucket_bytes}
    shard_bytes = mine["direct"]["bytes"]
    bw = copy_bandwidth(shard_bytes, "cuda" if torch.cuda.is_available() else "cpu")
    mine["memcpy"] = {"bandwidth_gb_s": bw / 1e9, "bound_s": shard_bytes / bw}
    for mode in ("gather", "direct"):
        mine[mode]["slowdown_vs_memcpy"] = mine[mode]["seconds_median"] / mine["memcpy"]["bound_s"]
    mine["direct_speedup"] = mine["gather"]["seconds_median"] / mine["direct"]["seconds_median"]
    ranks: list = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    if dist.get_rank() == 0:
        result = {
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                        "device": "cuda" if torch.cuda.is_available() else "cpu"},
            "model": {"path": args.model, "params": arch.num_params(), "vocab": arch.vocab_size,
                      "hidden": arch.hidden_size, "layers": arch.num_layers, "tied": arch.tie_embeddings},
            "layout": {"trainer_tp": args.tp, "rollout_tp": args.tp, "pp": 1},
            "gather_bucket_mb": args.bucket_mb, "syncs": args.syncs, "ranks": ranks,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        print(json.dumps(result, indent=2))
    engine.shutdown()
    dist.barrier()


def main(argv=None) -> int:
    args = parse_args(argv)
    if "LOCAL_RANK" not in os.environ:
        return launch(args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
