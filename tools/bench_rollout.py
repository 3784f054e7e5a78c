"""Benchmark the rollout engine: generation tokens/s and weight-sync time vs the memcpy bound.

    python tools/bench_rollout.py --out bench_rollout.json            # builds a random Qwen2
    python tools/bench_rollout.py --model /path/to/hf_dir --prompts 64 --n 4 --max-new 128

The memcpy bound is ``weight bytes / copy bandwidth``, the bandwidth measured in the same run
by ``dst.copy_(src)`` on a buffer of at least the model's size (on the engine's device): a
sync cannot be faster than one pass over the weights. Single process (no torchrun).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch


def copy_bandwidth(nbytes: int, device: str, repeats: int = 5) -> float:
    """Bytes/s of a plain tensor copy of ``nbytes`` (best of ``repeats``)."""
    n = max(nbytes // 4, 1 << 20)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return n * 4 / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="HF model directory (default: build a random Qwen2)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--bucket-mb", type=float, default=16.0)
    ap.add_argument("--kv-mb", type=int, default=256)
    ap.add_argument("--syncs", type=int, default=3)
    ap.add_argument("--out", default="bench_rollout.json")
    args = ap.parse_args()

    from transformers import AutoModelForCausalLM

    from r1mega.config.sections import RolloutConfig
    from r1mega.rollout import RolloutEngine
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    tmp = None
    model_dir = args.model
    if model_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_rollout_")
        model_dir = build_tiny_qwen2(tmp.name, hidden=args.hidden, heads=args.hidden // 64,
                                     kv_heads=max(args.hidden // 256, 1), layers=args.layers,
                                     intermediate=4 * args.hidden, vocab_size=args.vocab,
                                     max_positions=max(1024, args.prompt_len + args.max_new))
    cfg = RolloutConfig(max_new_tokens=args.max_new, kv_cache_memory_mb=args.kv_mb,
                        sync_bucket_mb=args.bucket_mb, max_model_len=args.prompt_len + args.max_new,
                        temperature=1.0)
    engine = RolloutEngine(model_dir, cfg)
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    vocab = engine.vocab_size
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(10, vocab, (args.prompts, args.prompt_len), generator=g).tolist()

    engine.generate(prompts[:2], n=1, max_new_tokens=4)  # warm-up (first call compiles)
    t = time.perf_counter()
    samples = engine.generate(prompts, n=args.n)
    gen_s = time.perf_counter() - t
    gen_tokens = sum(len(s.response_ids) for s in samples)

    weight_bytes = sum(p.numel() * p.element_size() for p in hf.parameters())
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bw = copy_bandwidth(weight_bytes, device)
    sync_times, stats = [], None
    for v in range(1, args.syncs + 1):
        t = time.perf_counter()
        stats = engine.sync_weights(hf.named_parameters(), version=v)
        sync_times.append(time.perf_counter() - t)
    sync_s = min(sync_times)
    bound_s = weight_bytes / bw
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "device": device,
                    "torch_threads": torch.get_num_threads()},
        "model": {"path": args.model or "random qwen2", "params": sum(p.numel() for p in hf.parameters()),
                  "weight_bytes": weight_bytes},
        "rollout": {"prompts": args.prompts, "n": args.n, "prompt_len": args.prompt_len,
                    "max_new_tokens": args.max_new, "generated_tokens": gen_tokens,
                    "seconds": gen_s, "tokens_per_s": gen_tokens / gen_s},
        "weight_sync": {"bucket_mb": args.bucket_mb, "seconds_best": sync_s, "seconds_all": sync_times,
                        "memcpy_bandwidth_gb_s": bw / 1e9, "memcpy_bound_s": bound_s,
                        "slowdown_vs_memcpy": sync_s / bound_s,
                        "effective_gb_s": weight_bytes / sync_s / 1e9,
                        "buckets": stats.num_buckets, "peak_bucket_bytes": stats.peak_bucket_bytes},
    }
    engine.shutdown()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
