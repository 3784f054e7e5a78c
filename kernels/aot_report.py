"""Compile every Triton kernel for a GPU architecture on a machine without one, and report its resources.

Triton's compiler and ptxas run on any x86-64 host, so this checks what the CPU interpreter
cannot: that each kernel lowers for the real target at the launch constants its launcher uses
(``tile_config`` / ``row_config`` / ``block_config``, GPU branch), fits the per-block shared
memory, keeps within the register file without spills, and gets tensor-core MMAs (``wgmma`` on
Hopper, ``mma.sync`` before) for its dots. It does not time anything: timings need the GPU
(``tools/bench_kernels.py``).

    python -m r1mega_kernels.aot_report --arch 90 --md report.md --json report.json

Must run with TRITON_INTERPRET unset (the kernels must be JIT functions, not interpreted ones).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field

import torch

# Hopper (sm_90): 227 KB of dynamic shared memory per block, 64K 32-bit registers per SM,
# at most 255 registers per thread.
SMEM_LIMIT = {90: 232448, 89: 101376, 80: 166912}
MAX_REGS_PER_THREAD = 255
REGS_PER_SM = 65536

_TRITON_DTYPE = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


@dataclass
class KernelSpec:
    """One kernel at one set of launch constants, as its launcher would launch it on CUDA."""

    name: str
    fn: object
    signature: dict  # arg name -> triton type ("*bf16", "i32", "fp32", "constexpr")
    constexprs: dict
    options: dict  # num_warps, num_stages
    aligned: tuple = ()  # args known to be multiples of 16 (pointers from torch, hidden sizes, strides)
    uses_dot: bool = False


@dataclass
class KernelReport:
    name: str
    ok: bool
    error: str = ""
    shared_bytes: int = 0
    registers: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    num_warps: int = 0
    num_stages: int = 0
    mma: str = ""  # "wgmma", "mma.sync" or "" (no tensor-core instruction)
    checks: list = field(default_factory=list)  # failed checks, human readable


def _sig(names_types: str) -> dict:
    """'X:*bf16 T:i32 BLOCK:constexpr' -> dict."""
    return dict(item.split(":") for item in names_types.split())


def kernel_specs(arch: int = 90) -> list[KernelSpec]:
    """The launch configurations of every Triton kernel in r1mega_kernels (CUDA branch of each launcher)."""
    import importlib

    # by module path: the package re-exports functions under the same names (linear_logprob)
    grpo_loss, linear_logprob, logits_rows = (importlib.import_module(f"{__package__}.{m}")
                                              for m in ("grpo_loss", "linear_logprob", "logits_rows"))

    specs = []
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        t = _TRITON_DTYPE[dtype]
        cfg = linear_logprob.tile_config("cuda", dtype, arch=arch)
        consts = {k: cfg[k] for k in ("BLOCK_T", "BLOCK_V", "BLOCK_H", "UPCAST", "PREC")}
        opts = {k: cfg[k] for k in ("num_warps", "num_stages")}
        specs.append(KernelSpec(
            f"linear_logprob fwd ({t})", linear_logprob._llp_fwd_kernel,
            _sig(f"X:*{t} W:*{t} TGT:*i64 STATS:*fp32 T:i32 V:i32 H:i32 stride_x:i32 stride_w:i32 inv_temp:fp32 "
                 "vocab_start:i32 tiles_per_split:i32 BLOCK_T:constexpr BLOCK_V:constexpr BLOCK_H:constexpr "
                 "UPCAST:constexpr PREC:constexpr"),
            consts, opts, aligned=("X", "W", "TGT", "STATS", "H", "stride_x", "stride_w"), uses_dot=True))
        bcfg = linear_logprob.tile_config("cuda", dtype, backward=True, arch=arch)
        bconsts = {k: bcfg[k] for k in ("BLOCK_T", "BLOCK_V", "BLOCK_H", "UPCAST", "PREC")}
        specs.append(KernelSpec(
            f"linear_logprob bwd atomic ({t})", linear_logprob._llp_bwd_kernel,
            _sig(f"X:*{t} W:*{t} TGT:*i64 LSE:*fp32 EZ:*fp32 GLP:*fp32 GENT:*fp32 DX:*fp32 DW:*fp32 T:i32 V:i32 "
                 "H:i32 stride_x:i32 stride_w:i32 inv_temp:fp32 vocab_start:i32 BLOCK_T:constexpr "
                 "BLOCK_V:constexpr BLOCK_H:constexpr UPCAST:constexpr HAS_ENT:constexpr NEED_DX:constexpr "
                 "NEED_DW:constexpr PREC:constexpr"),
            dict(bconsts, HAS_ENT=True, NEED_DX=True, NEED_DW=True), {k: bcfg[k] for k in ("num_warps", "num_stages")},
            aligned=("X", "W", "TGT", "LSE", "EZ", "GLP", "GENT", "DX", "DW", "H", "stride_x", "stride_w"),
            uses_dot=True))
    rcfg = logits_rows.row_config("cuda")
    row_opts = {"num_warps": rcfg["num_warps"], "num_stages": 1}
    specs.append(KernelSpec(
        "logits rows: stats", logits_rows._row_stats_kernel,
        _sig("Z:*fp32 TGT:*i64 STATS:*fp32 C:i32 V:i32 stride_z:i32 inv_temp:fp32 vocab_start:i32 "
             "BLOCK_V:constexpr"),
        {"BLOCK_V": rcfg["BLOCK_V"]}, row_opts, aligned=("Z", "TGT", "STATS")))
    specs.append(KernelSpec(
        "logits rows: grad in place", logits_rows._row_grad_kernel,
        _sig("Z:*fp32 TGT:*i64 LSE:*fp32 EZ:*fp32 GLP:*fp32 GENT:*fp32 V:i32 stride_z:i32 inv_temp:fp32 "
             "vocab_start:i32 BLOCK_V:constexpr"),
        {"BLOCK_V": rcfg["BLOCK_V"]}, row_opts, aligned=("Z", "TGT", "LSE", "EZ", "GLP", "GENT")))
    gcfg = grpo_loss.block_config("cuda")
    g_opts = {"num_warps": gcfg["num_warps"], "num_stages": 1}
    for has_ref, has_ent in ((True, True), (False, False)):
        tag = f"ref={has_ref} ent={has_ent}"
        specs.append(KernelSpec(
            f"grpo loss fwd ({tag})", grpo_loss._grpo_fwd_kernel,
            _sig("LP:*fp32 OLD:*fp32 ADV:*fp32 REF:*fp32 ENT:*fp32 WT:*fp32 MASK:*fp32 PART:*fp32 T:i32 "
                 "clip_low:fp32 clip_high:fp32 kl_coef:fp32 ent_coef:fp32 HAS_REF:constexpr HAS_ENT:constexpr "
                 "NSUM:constexpr BLOCK:constexpr"),
            {"HAS_REF": has_ref, "HAS_ENT": has_ent, "NSUM": grpo_loss.NUM_SUMS, "BLOCK": gcfg["BLOCK"]}, g_opts,
            aligned=("LP", "OLD", "ADV", "REF", "ENT", "WT", "MASK", "PART")))
        specs.append(KernelSpec(
            f"grpo loss bwd ({tag})", grpo_loss._grpo_bwd_kernel,
            _sig("G:*fp32 LP:*fp32 OLD:*fp32 ADV:*fp32 REF:*fp32 WT:*fp32 DLP:*fp32 DENT:*fp32 T:i32 "
                 "clip_low:fp32 clip_high:fp32 kl_coef:fp32 ent_coef:fp32 HAS_REF:constexpr HAS_ENT:constexpr "
                 "BLOCK:constexpr"),
            {"HAS_REF": has_ref, "HAS_ENT": has_ent, "BLOCK": gcfg["BLOCK"]}, g_opts,
            aligned=("G", "LP", "OLD", "ADV", "REF", "WT", "DLP", "DENT")))
    return specs


def _ptxas(arch: int) -> str:
    """The ptxas Triton itself assembles with for this architecture (it ships with the wheel)."""
    from triton.backends.nvidia.compiler import get_ptxas

    path = get_ptxas(arch).path
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"ptxas not found ({path!r}); this triton install has no NVIDIA backend binaries")
    return path


def _ptxas_usage(ptx: str, arch: int) -> tuple[int, int, int]:
    """(registers, spill store bytes, spill load bytes) from `ptxas -v` on the kernel's PTX."""
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        # the flags Triton's own make_cubin passes (line info, register-allocation level 2)
        out = subprocess.run([_ptxas(arch), "-lineinfo", "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}", src,
                              "-o", os.path.join(d, "k.cubin")],
                             capture_output=True, text=True)
    text = out.stdout + out.stderr
    if out.returncode:
        raise RuntimeError(f"ptxas failed: {text.strip().splitlines()[-1] if text.strip() else out.returncode}")
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    return (int(regs.group(1)) if regs else 0, int(spills.group(1)) if spills else 0,
            int(spills.group(2)) if spills else 0)


def compile_spec(spec: KernelSpec, arch: int) -> KernelReport:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    rep = KernelReport(spec.name, ok=False, num_warps=spec.options["num_warps"],
                       num_stages=spec.options["num_stages"])
    names = spec.fn.arg_names
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in spec.aligned}
    try:
        src = ASTSource(fn=spec.fn, signature=spec.signature, constexprs=spec.constexprs, attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=dict(spec.options))
        ptx = k.asm["ptx"]
        rep.shared_bytes = int(k.metadata.shared)
        rep.registers, rep.spill_stores, rep.spill_loads = _ptxas_usage(ptx, arch)
        rep.mma = "wgmma" if "wgmma.mma_async" in ptx else ("mma.sync" if "mma.sync" in ptx else "")
        rep.ok = True
    except Exception as e:  # report every kernel, then fail on the list
        rep.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        rep.checks.append("does not compile")
        return rep
    limit = SMEM_LIMIT.get(arch, SMEM_LIMIT[80])
    if rep.shared_bytes > limit:
        rep.checks.append(f"shared memory {rep.shared_bytes} B > {limit} B per block")
    if rep.registers > MAX_REGS_PER_THREAD or rep.registers * 32 * rep.num_warps > REGS_PER_SM:
        rep.checks.append(f"{rep.registers} registers x {32 * rep.num_warps} threads do not fit one SM")
    if rep.spill_stores or rep.spill_loads:
        rep.checks.append(f"register spills ({rep.spill_stores} B stores, {rep.spill_loads} B loads)")
    if spec.uses_dot and "fp32" not in spec.name:
        want = "wgmma" if arch >= 90 else "mma.sync"
        if rep.mma != want:
            rep.checks.append(f"half-precision dots did not lower to {want} (got {rep.mma or 'no MMA'})")
    return rep


def _compile_nth(arch: int, i: int) -> KernelReport:
    return compile_spec(kernel_specs(arch)[i], arch)


def run(arch: int, jobs: int = 0) -> list[KernelReport]:
    """Compile every kernel spec for ``arch``; ``jobs`` worker processes (0: one per CPU core, at most 8)."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("unset TRITON_INTERPRET: the report compiles the real kernels, not interpreted ones")
    n = len(kernel_specs(arch))
    jobs = jobs or min(8, os.cpu_count() or 1)
    if jobs <= 1:
        return [_compile_nth(arch, i) for i in range(n)]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # each compile is single-threaded; workers rebuild the specs (JIT functions do not pickle)
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(_compile_nth, [arch] * n, range(n)))


def to_markdown(reports: list[KernelReport], arch: int, versions: dict) -> str:
    lines = [f"# Triton kernels compiled for sm_{arch} (static resources; no timing)", "",
             "Compiled on a CPU host with Triton's compiler and ptxas at each launcher's CUDA constants "
             f"(`python -m r1mega_kernels.aot_report --arch {arch}`).",
             f"Date: {versions.get('date', '?')}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in versions.items() if k != "date"), "",
             "| kernel | warps | stages | shared mem | registers/thread | spills (st/ld B) | tensor-core MMA | "
             "problems |", "|---|---|---|---|---|---|---|---|"]
    for r in reports:
        smem = f"{r.shared_bytes / 1024:.1f} KiB" if r.ok else "-"
        lines.append(f"| {r.name} | {r.num_warps} | {r.num_stages} | {smem} | {r.registers or '-'} | "
                     f"{r.spill_stores}/{r.spill_loads} | {r.mma or '-'} | {'; '.join(r.checks) or 'none'} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x10 (90 = H100/H200, 80 = A100)")
    ap.add_argument("--jobs", type=int, default=0, help="compile processes (0: one per core, at most 8)")
    ap.add_argument("--md", help="write the markdown table here")
    ap.add_argument("--json", help="write the reports as JSON here")
    args = ap.parse_args(argv)
    import platform

    import triton

    reports = run(args.arch, args.jobs)
    from datetime import date

    versions = {"date": date.today().isoformat(), "triton": triton.__version__, "torch": torch.__version__,
                "python": platform.python_version()}
    md = to_markdown(reports, args.arch, versions)
    print(md)
    if args.md:
        with open(args.md, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arch": args.arch, "versions": versions, "kernels": [asdict(r) for r in reports]}, f, indent=1)
    bad = [r for r in reports if r.checks]
    for r in bad:
        print(f"FAIL {r.name}: {'; '.join(r.checks)} {r.error}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
