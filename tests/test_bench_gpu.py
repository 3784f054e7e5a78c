"""``scripts/bench_gpu.sh --smoke``: every part of the GPU check runs on CPU at tiny shapes, on the
code path a lent GPU will run (the trainer on Megatron with the Triton LM head, in the
interpreter; the kernel tables with every backend), so a lent machine is never spent on debugging.
Plus the trainer benchmark's own arithmetic and its refusal to time a trainer that is wrong.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.dist import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import bench_trainer  # noqa: E402

PARTS = ("logprob_fwd", "logprob_fwdbwd", "grpo_fwdbwd", "grpo_loss")


@pytest.mark.slow
def test_bench_gpu_smoke_runs_every_part_end_to_end(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(["bash", "scripts/bench_gpu.sh", "--smoke", "--out", str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    t = json.loads((tmp_path / "smoke_trainer.json").read_text())
    assert t["spec"]["model"] == "smoke" and t["spec"]["device"] == "cpu"
    assert t["r1mega"]["backend"] == "triton" and t["r1mega"]["micro_batches"] == 3, t["r1mega"]
    for system in ("r1mega", "eager"):
        for phase in ("sft", "rl"):
            x = t[system][phase]
            assert x["step_s"] > 0 and x["tokens_per_s"] > 0 and x["floor_ratio"] > 0 and x["peak_gb"] > 0, x
        assert 0 < t[system]["head_s"] and 0 < t[system]["head_share"], t[system]
    for phase in ("sft", "rl"):  # the same weights and tokens: the same first loss, to fp32 rounding
        assert t["agreement"][phase]["rel_diff"] < 1e-5, t["agreement"]
    assert t["params"] == 150_592  # the smoke Qwen2: embeddings (tied) + 2 layers + final norm
    md = (tmp_path / "smoke_trainer.md").read_text()
    assert "| rl | r1mega |" in md and "LM head + loss alone" in md

    for part in PARTS:
        data = json.loads((tmp_path / f"smoke_{part}.json").read_text())
        rows = data["results"]
        assert {x["backend"] for x in rows} >= {"eager", "triton"}, rows
        assert all("error" not in x and x["time_s"] > 0 for x in rows), rows
        if part != "grpo_loss":  # checked against float64 before timing, as on the GPU
            assert all(x["check"]["mean_abs_err"] < 1e-5 and x["check"]["max_logp"] <= 0 for x in rows), rows
        assert (tmp_path / f"smoke_{part}.md").exists()


def test_bench_gpu_refuses_bad_arguments_and_a_machine_without_cuda():
    r = subprocess.run(["bash", "scripts/bench_gpu.sh", "trainr"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown argument 'trainr'" in r.stderr and "trainer" in r.stderr
    if not __import__("torch").cuda.is_available():
        r = subprocess.run(["bash", "scripts/bench_gpu.sh", "trainer"], cwd=REPO, capture_output=True, text=True,
                           env={**os.environ, "PYTHON": sys.executable})
        assert r.returncode != 0 and "needs a CUDA GPU" in r.stderr and "--smoke" in r.stderr


def test_model_flops_count_every_linear_weight_of_the_hf_model():
    """Layer FLOPs = 2 x (weights of every Linear in the decoder layers) per token, from the model
    transformers builds; the LM head's on response tokens only."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    m = bench_trainer.MODELS["smoke"]
    model = Qwen2ForCausalLM(Qwen2Config(**m))
    linear = sum(mod.weight.numel() for mod in model.model.layers.modules() if isinstance(mod, torch.nn.Linear))
    B, P, R = 3, 5, 7
    T = P + R
    attention = 4 * m["num_hidden_layers"] * m["hidden_size"] * T * T / 2
    fwd = B * (2 * linear * T + attention + 2 * model.lm_head.weight.numel() * R)
    got = bench_trainer.model_flops(m, B, P, R)
    assert got["step"] == pytest.approx(3 * fwd, rel=1e-12)
    assert got["head"] == pytest.approx(3 * B * 2 * model.lm_head.weight.numel() * R, rel=1e-12)


def test_a_trainer_whose_loss_disagrees_is_not_timed():
    res = {"r1mega": {"sft": {"first_loss": 7.0}, "rl": {"first_loss": 0.5}},
           "eager": {"sft": {"first_loss": 7.0}, "rl": {"first_loss": 0.5}}}
    ok = bench_trainer.check_agreement(res, 1e-4)
    assert ok["sft"]["rel_diff"] == 0.0 and ok["rl"]["rel_diff"] == 0.0
    res["r1mega"]["rl"]["first_loss"] = 0.51
    with pytest.raises(SystemExit, match="first rl loss 0.510000 and the eager one 0.500000 differ by 2.00%"):
        bench_trainer.check_agreement(res, 1e-4)


def test_prepare_fetches_a_megatron_core_wheel_the_device_can_install_offline(tmp_path):
    """``--prepare`` (run where PyPI is reachable) leaves one CPython 3.12 x86-64 wheel of the pinned
    megatron-core whose only needs are torch, numpy and packaging: what the device's python has."""
    import zipfile

    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "bench_gpu.sh"
    script.write_text(open(os.path.join(REPO, "scripts", "bench_gpu.sh")).read())
    r = subprocess.run(["bash", str(script), "--prepare"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    wheels = list((tmp_path / ".whl").glob("*.whl"))
    assert [w.name.split("-")[:3] for w in wheels] == [["megatron_core", "0.16.1", "cp312"]], wheels
    with zipfile.ZipFile(wheels[0]) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    needs = {line.split()[1].split(">")[0].split("=")[0].split(";")[0] for line in meta.splitlines()
             if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert needs <= {"torch", "numpy", "packaging"}, needs
    assert "x86_64" in wheels[0].name
