"""Benchmark the LM-head log-probability / GRPO loss paths: eager torch vs torch_chunked vs Triton.

Each (op, T, V, backend) config runs in a fresh subprocess so its peak memory is its own:
  CPU  peak extra RSS = VmHWM - VmRSS after inputs and gradient buffers exist (VmHWM reset
       through /proc/self/clear_refs; falls back to ru_maxrss), i.e. memory beyond inputs, dX, dW.
  CUDA peak extra = torch.cuda.max_memory_allocated() - allocated after inputs and gradients.
Time: CUDA events on GPU, perf_counter on CPU; warm-up runs, then the median of --repeats.
Ratios are to the plain [T,H] x [H,V] torch matmul measured in the same process, and to eager.
On GPU each config is first checked against a float64 reference on a slice of tokens.

  # CPU (torch paths, small sizes):
  python tools/bench_kernels.py --device cpu --tokens 2048 8192 32768 --vocab 8192 --hidden 128 \
      --ops logprob_fwdbwd grpo_fwdbwd --backends eager torch_chunked --name cpu_kernels_memory
  # H200 (defaults: T 4K..64K, V 32K / 129,280 / 151,936, H 4096, bf16, all backends):
  python tools/bench_kernels.py --device cuda --name h200_kernels
  # standalone GRPO loss kernel at 1M tokens (H is unused by that op; keep it small):
  python tools/bench_kernels.py --device cuda --ops grpo_loss --tokens 1048576 --vocab 32 --hidden 16 \
      --name h200_grpo_loss
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

import torch

OPS = ("logprob_fwd", "logprob_fwdbwd", "grpo_fwdbwd", "grpo_loss")
FLOP_MULT = {"logprob_fwd": 2, "logprob_fwdbwd": 8, "grpo_fwdbwd": 6, "grpo_loss": 0}  # x T*H*V
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ----------------------------------------------------------------------------- child side


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _inputs(T, H, V, dtype, device, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = (torch.randn(T, H, generator=g) / H ** 0.25).to(device, dtype).requires_grad_()
    w = (torch.randn(V, H, generator=g) / H ** 0.25).to(device, dtype).requires_grad_()
    y = torch.randint(0, V, (T,), generator=g).to(device)
    old = (-torch.rand(T, generator=g) * 5).to(device)
    adv = torch.randn(T, generator=g).to(device)
    mask = (torch.rand(T, generator=g) > 0.1).float().to(device)
    ref = (old + 0.1 * torch.randn(T, generator=g).to(device))
    return x, w, y, old, adv, mask, ref


BACKENDS = ("eager", "torch_chunked", "triton", "triton:gemm", "triton:fused_atomic")  # triton = fused schedule


def _split(backend):
    """'triton:gemm' -> ('triton', 'gemm'); the schedule only applies to the linear_logprob ops."""
    name, _, schedule = backend.partition(":")
    return name, schedule or "fused"


def _op(op, backend, inp):
    import r1mega_kernels as K

    x, w, y, old, adv, mask, ref = inp
    backend, schedule = _split(backend)
    if op == "logprob_fwd":
        def run():
            with torch.no_grad():
                return K.linear_logprob(x, w, y, with_entropy=True, backend=backend, schedule=schedule)[0]
    elif op == "logprob_fwdbwd":
        def run():
            lp, ent = K.linear_logprob(x, w, y, with_entropy=True, backend=backend, schedule=schedule)
            (lp.sum() + 0.01 * ent.sum()).backward()
    elif op == "grpo_fwdbwd":
        def run():
            loss, _ = K.linear_grpo_loss(x, w, y, old_logp=old, advantages=adv, mask=mask, ref_logp=ref,
                                         kl_coef=0.01, entropy_coef=0.001, backend=backend)
            loss.backward()
    elif op == "grpo_loss":
        lp = old.clone().add_(0.05).requires_grad_()

        def run():
            loss, _ = K.grpo_loss(lp, old, adv, mask, ref_logp=ref, kl_coef=0.01, backend=backend)
            loss.backward()
    else:
        raise ValueError(f"unknown op {op!r}; choose from {OPS}")
    return run


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, warmup, repeats):
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _fp64_check(inp, backend, device, n_check=256):
    """Mean / max abs logp error against float64 on the first n_check tokens (before timing)."""
    import r1mega_kernels as K

    x, w, y = inp[:3]
    n = min(n_check, x.shape[0])
    backend, schedule = _split(backend)
    with torch.no_grad():
        lp, _ = K.linear_logprob(x[:n].detach(), w.detach(), y[:n], backend=backend, schedule=schedule)
        ref, _ = K.linear_logprob_eager(x[:n].detach().double(), w.detach().double(), y[:n])
    err = (lp.double() - ref).abs()
    return {"mean_abs_err": err.mean().item(), "max_abs_err": err.max().item(), "max_logp": lp.max().item()}


def child(cfg):
    device, op, backend = cfg["device"], cfg["op"], cfg["backend"]
    T, H, V, dtype = cfg["T"], cfg["H"], cfg["V"], DTYPES[cfg["dtype"]]
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    inp = _inputs(T, H, V, dtype, device)
    x, w = inp[0], inp[1]
    out = dict(cfg)
    with torch.no_grad():
        out["matmul_s"] = _time(lambda: x @ w.T, device, cfg["warmup"], cfg["repeats"])
    if cfg.get("fp64_check") and op != "grpo_loss":
        out["check"] = _fp64_check(inp, backend, device)
    fn = _op(op, backend, inp)
    fn()  # warm-up (compiles kernels, creates .grad buffers so they count as baseline)
    for t in (x, w):
        if t.grad is not None:
            t.grad.zero_()
    _sync(device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import gc

        gc.collect()
        out["peak_method"] = "VmHWM" if _reset_peak() else "ru_maxrss"
        base = _rss_kb("VmRSS") * 1024
        base_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["time_s"] = _time(fn, device, max(0, cfg["warmup"] - 1), cfg["repeats"])
    if device == "cuda":
        out["peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
    elif out["peak_method"] == "VmHWM":
        out["peak_extra_bytes"] = _rss_kb("VmHWM") * 1024 - base
    else:
        out["peak_extra_bytes"] = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_max)
    return out


# ----------------------------------------------------------------------------- parent side


def run_config(cfg, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(cfg)]
    try:
        # Fixed glibc mmap/trim thresholds: freed big buffers go back to the OS, so the RSS
        # high-water mark measures live memory, not what malloc chose to keep.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(cfg, error=f"timeout after {timeout}s")
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or ["no output"]
    err = "OOM" if "out of memory" in (p.stderr or "").lower() or p.returncode in (-9, 137) else tail[0][:200]
    return dict(cfg, error=err)


def _mb(b):
    return f"{b / 2**20:,.1f}"


def markdown(results, meta):
    lines = [f"# Kernel benchmark: {meta['name']}", "",
             f"- date: {meta['date']}", f"- device: {meta['device_name']}",
             f"- torch {meta['torch']}, triton {meta['triton']}, python {meta['python']}",
             f"- command: `{meta['command']}`", "",
             "Peak extra memory = peak beyond inputs, dX and dW (CPU: process RSS high-water mark; "
             "CUDA: max_memory_allocated). Ratios: time / the [T,H]x[H,V] matmul time, and / eager.", "",
             "| op | T | V | H | dtype | backend | time ms | x matmul | x eager | peak extra MB | mem x eager | note |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|"]
    eager = {(r["op"], r["T"], r["V"]): r for r in results if r["backend"] == "eager" and "time_s" in r}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['op']} | {r['T']} | {r['V']} | {r['H']} | {r['dtype']} | {r['backend']} "
                         f"| - | - | - | - | - | {r['error']} |")
            continue
        e = eager.get((r["op"], r["T"], r["V"]))
        x_eager = f"{r['time_s'] / e['time_s']:.2f}" if e else "-"
        m_eager = f"{r['peak_extra_bytes'] / max(e['peak_extra_bytes'], 1):.3f}" if e else "-"
        note = ""
        if "check" in r:
            note = f"fp64 mean err {r['check']['mean_abs_err']:.1e}"
        lines.append(f"| {r['op']} | {r['T']} | {r['V']} | {r['H']} | {r['dtype']} | {r['backend']} "
                     f"| {r['time_s'] * 1e3:,.1f} | {r['time_s'] / r['matmul_s']:.2f} | {x_eager} "
                     f"| {_mb(r['peak_extra_bytes'])} | {m_eager} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--tokens", type=int, nargs="+", help="T values (default: GPU 4096 16384 65536; CPU 2048 8192)")
    ap.add_argument("--vocab", type=int, nargs="+", help="V values (default: GPU 32768 129280 151936; CPU 8192)")
    ap.add_argument("--hidden", type=int, help="H (default: GPU 4096; CPU 128)")
    ap.add_argument("--dtype", choices=list(DTYPES), help="input dtype (default: GPU bf16; CPU fp32)")
    ap.add_argument("--ops", nargs="+", choices=OPS, default=["logprob_fwd", "logprob_fwdbwd", "grpo_fwdbwd"])
    ap.add_argument("--backends", nargs="+", choices=BACKENDS,
                    help="triton:<schedule> picks a linear_logprob schedule (default: all on GPU)")
    ap.add_argument("--warmup", type=int, help="warm-up runs (default: GPU 3; CPU 1)")
    ap.add_argument("--repeats", type=int, help="timed runs, median reported (default: GPU 10; CPU 1)")
    ap.add_argument("--in-process", action="store_true",
                    help="run every config in this process (smoke runs: no per-config memory isolation, so "
                         "the peak-memory column is meaningless)")
    ap.add_argument("--check", action="store_true",
                    help="check each config's logprobs against float64 before timing (always on CUDA)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each child (0: torch default)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per config")
    ap.add_argument("--name", default=None, help="output stem under --out-dir (default: <device>_kernels)")
    ap.add_argument("--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                      "benchmarks", "results"))
    args = ap.parse_args(argv)
    if args._child:
        print("RESULT " + json.dumps(child(json.loads(args._child))), flush=True)
        return
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    gpu = device == "cuda"
    if gpu and not torch.cuda.is_available():
        ap.error("--device cuda but CUDA is not available")
    tokens = args.tokens or ([4096, 16384, 65536] if gpu else [2048, 8192])
    vocab = args.vocab or ([32768, 129280, 151936] if gpu else [8192])
    hidden = args.hidden or (4096 if gpu else 128)
    dtype = args.dtype or ("bf16" if gpu else "fp32")
    backends = args.backends or (list(BACKENDS) if gpu else ["eager", "torch_chunked"])
    warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    repeats = args.repeats or (10 if gpu else 1)
    name = args.name or f"{device}_kernels"
    results = []
    for op in args.ops:
        for V in vocab:
            for T in tokens:
                for be in backends:
                    if ":" in be and not op.startswith("logprob"):
                        continue  # schedules are a linear_logprob choice
                    cfg = dict(device=device, op=op, backend=be, T=T, H=hidden, V=V, dtype=dtype, warmup=warmup,
                               repeats=repeats, threads=args.threads, fp64_check=args.check or gpu)
                    r = child(cfg) if args.in_process else run_config(cfg, args.timeout)
                    results.append(r)
                    if "error" in r:
                        print(f"{op:15s} T={T:6d} V={V:6d} {be:19s} ERROR {r['error']}", flush=True)
                    else:
                        print(f"{op:15s} T={T:6d} V={V:6d} {be:19s} {r['time_s'] * 1e3:10.1f} ms "
                              f"x{r['time_s'] / r['matmul_s']:5.2f} matmul  peak extra {_mb(r['peak_extra_bytes'])} MB",
                              flush=True)
    import triton  # noqa: F401  (version only)

    meta = dict(name=name, date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                device_name=torch.cuda.get_device_name() if gpu else f"CPU ({platform.processor() or platform.machine()},"
                                                                       f" {os.cpu_count()} cores)",
                torch=torch.__version__, triton=getattr(sys.modules.get("triton"), "__version__", "n/a"),
                python=platform.python_version(),
                command="python tools/bench_kernels.py " + " ".join(a for a in (argv or sys.argv[1:])))
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, name)
    with open(stem + ".json", "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(results, meta))
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
