"""The kernel benchmark runs end to end (CPU, tiny shapes; Triton in the interpreter).

It is the command a GPU session runs to produce the H100/H200 tables, so it must not break on
the way there: a config per subprocess, the float64 check, the ratios, the JSON and markdown.
"""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_bench_kernels_cpu_smoke(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1", TRITON_DEFAULT_FP_FUSION="1")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "bench_kernels.py"), "--device", "cpu", "--tokens", "40",
           "--vocab", "301", "--hidden", "16", "--ops", "logprob_fwdbwd", "--backends", "eager", "triton:gemm",
           "--name", "smoke", "--out-dir", str(tmp_path), "--threads", "1"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data = json.loads((tmp_path / "smoke.json").read_text())
    assert data["meta"]["date"] and data["meta"]["torch"] and data["meta"]["triton"]
    rows = {x["backend"]: x for x in data["results"]}
    assert set(rows) == {"eager", "triton:gemm"}, rows
    for be, row in rows.items():
        assert "error" not in row, row
        assert row["time_s"] > 0 and row["matmul_s"] > 0, row
    md = (tmp_path / "smoke.md").read_text()
    assert "| logprob_fwdbwd | 40 | 301 | 16 |" in md and "triton:gemm" in md
