"""Every Triton kernel compiles for Hopper (sm_90) and Ampere (sm_80) at its launcher's CUDA constants.

The CPU interpreter runs the kernels' math but not the GPU compiler: this test runs Triton's real
compiler and ptxas on the CPU (``r1mega_kernels.aot_report``) and checks what only that shows:
each kernel lowers, fits the shared memory per block, does not spill registers, and its
half-precision dots become tensor-core MMAs (wgmma on sm_90). It runs in a subprocess because
the kernels must be JIT functions, and this pytest process imports them under TRITON_INTERPRET=1.
"""

import json
import os
import subprocess
import sys

import pytest

try:
    from triton.backends.nvidia.compiler import get_ptxas

    HAVE_PTXAS = all(os.path.exists(get_ptxas(a).path or "") for a in (80, 90))
except Exception:  # no triton, or a wheel without the NVIDIA backend binaries (e.g. aarch64)
    HAVE_PTXAS = False

pytestmark = pytest.mark.skipif(not HAVE_PTXAS, reason="triton's NVIDIA backend (ptxas) is not installed here")


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "triton_cache"), TRITON_DEFAULT_FP_FUSION="1")
    return env


@pytest.mark.parametrize("arch,mma", [(90, "wgmma"), (80, "mma.sync")])
def test_kernels_compile_within_resources(tmp_path, arch, mma):
    out = tmp_path / "report.json"
    r = subprocess.run([sys.executable, "-m", "r1mega_kernels.aot_report", "--arch", str(arch), "--json", str(out),
                        "--md", str(tmp_path / "report.md")], env=_env(tmp_path), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    kernels = {k["name"]: k for k in rep["kernels"]}
    assert len(kernels) == 12, sorted(kernels)
    for name, k in kernels.items():
        assert k["ok"] and not k["checks"], (name, k)
        assert 0 < k["registers"] <= 255 and k["spill_stores"] == 0, (name, k)
    for dt in ("bf16", "fp16"):  # the GEMM kernels run on tensor cores
        for op in ("fwd", "bwd atomic"):
            assert kernels[f"linear_logprob {op} ({dt})"]["mma"] == mma
            assert kernels[f"linear_logprob {op} ({dt})"]["shared_bytes"] > 0  # pipelined through shared memory


def test_report_flags_a_config_that_does_not_fit(tmp_path):
    """The checks can fail: the bf16 forward on 128 x 256 tiles spills registers on sm_90."""
    code = """
import copy, r1mega_kernels.aot_report as A
spec = [s for s in A.kernel_specs(90) if s.name == "linear_logprob fwd (bf16)"][0]
big = copy.copy(spec)
big.constexprs = dict(spec.constexprs, BLOCK_T=128, BLOCK_V=256, BLOCK_H=64)
big.options = dict(num_warps=8, num_stages=3)
rep = A.compile_spec(big, 90)
print("CHECKS", rep.checks)
"""
    r = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "CHECKS ['register spills" in r.stdout, r.stdout
