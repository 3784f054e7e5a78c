"""Each CPU workaround in r1mega.parallel.compat is needed: the megatron-core code path it
covers runs with all workarounds and fails with exactly that one left out."""

import os
import subprocess
import sys

import pytest
import torch

from tests.dist import REPO, free_port

PROBE = os.path.join(REPO, "tests", "workers", "compat_probe.py")
CASES = [  # (workaround, megatron code path it unblocks, error seen without it)
    ("rng_tracker", "seed", "Torch not compiled with CUDA"),
    ("cuda_shim", "forward", "Torch not compiled with CUDA"),
    ("tensor_methods", "optimizer", "Wrapped parameters must be one of torch.cuda.FloatTensor"),
    ("torch_norm", "sp_norm", "sequence parallel not supported by torch"),
    ("moe", "moe", "te_general_gemm"),
]
# first, so that the all-paths run checks it before the optimizer (torch.optim loads TorchDynamo itself)
CASES.insert(0, ("jit_fuser", "no_dynamo", "TorchDynamo was imported"))

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU workarounds are off where CUDA exists")


def _probe(check, *skip, tries=3):
    """Run the probe; again on a new port when another process took the free one first (EADDRINUSE:
    free_port's port is free when chosen, not reserved)."""
    for _ in range(tries):
        env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
                   PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run([sys.executable, PROBE, check, *skip], capture_output=True, text=True, timeout=180,
                           env=env, cwd=REPO)
        if "EADDRINUSE" not in r.stderr:
            return r
    return r


def test_all_paths_run_with_the_workarounds():
    checks = ",".join(c for _, c, _ in CASES)
    r = _probe(checks)
    assert r.returncode == 0 and "OK" in r.stdout, f"{checks}:\n{r.stdout}\n{r.stderr[-3000:]}"


@pytest.mark.parametrize("workaround,check,error", CASES, ids=[c[0] for c in CASES])
def test_each_workaround_is_needed(workaround, check, error):
    r = _probe(check, workaround)
    assert r.returncode == 1, f"{check} ran without {workaround}: the workaround is not needed?\n{r.stdout}"
    assert error in r.stderr, r.stderr[-3000:]


def test_unknown_workaround_name_is_an_error():
    from r1mega.parallel import compat

    with pytest.raises(ValueError, match="unknown compat workaround"):
        compat.apply(skip=("rng",))
