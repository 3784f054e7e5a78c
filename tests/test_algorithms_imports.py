"""r1mega.algorithms and r1mega.rewards import without torch.distributed, megatron, vLLM or Triton."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("megatron", "vllm", "triton", "transformer_engine", "apex", "kernels")

PROBE = """
import json, sys
import torch
base = set(sys.modules)                       # `import torch` alone already loads parts of torch.distributed
import r1mega.rewards
rewards_mods = set(sys.modules) - base
import r1mega.algorithms as A
A.policy_loss, A.compute_advantages, A.dynamic_sampling, A.aggregate
new = set(sys.modules) - base
print(json.dumps({"new": sorted(new), "torch_from_rewards": any(m.split(".")[0] == "torch" for m in rewards_mods)}))
"""

PROBE_NO_TORCH = """
import json, sys
import r1mega.rewards
import r1mega.algorithms.config, r1mega.config
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy"))))
"""


def _run(code: str):
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_heavy_imports():
    got = _run(PROBE)
    offenders = [m for m in got["new"] if m.split(".")[0] in HEAVY or m.startswith("torch.distributed")]
    assert offenders == []
    assert not got["torch_from_rewards"]


def test_rewards_and_configs_do_not_import_torch():
    assert _run(PROBE_NO_TORCH) == []
