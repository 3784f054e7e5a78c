"""The `r1mega` command line: every subcommand parses, and the conversion round trip through
the CLI (hf-to-r1mega at TP=2, reshard to TP=1/PP=2, then r1mega-to-hf) gives the original tensors."""

import os
import subprocess
import sys

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import make_hf_model


def _cli(*args, timeout=120):
    env = dict(os.environ, PYTHONWARNINGS="ignore", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "r1mega.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def test_help_lists_every_subcommand(capsys):
    from r1mega.cli import build_parser

    out = _cli("--help").stdout  # the installed entry point, once
    for cmd in ("tiny", "train", "sft", "eval", "generate", "convert", "config", "plan", "reject-sample", "train-rm", "r1-chain"):
        assert cmd in out
        with pytest.raises(SystemExit) as e:  # every subcommand's own help, in process
            build_parser().parse_args([cmd, "--help"])
        assert e.value.code == 0 and "usage: r1mega " + cmd in capsys.readouterr().out


def test_config_errors_exit_2_with_the_message():
    r = _cli("config", "parallel.tensr=2")
    assert r.returncode == 2 and 'unknown key \'parallel.tensr\' (did you mean "tensor"?)' in r.stderr


@pytest.mark.multiproc
def test_convert_round_trip_through_the_cli(tmp_path):
    import json

    path, model = make_hf_model("qwen3", str(tmp_path), seed=4)
    ckpt, pp2, back = tmp_path / "ckpt", tmp_path / "pp2", tmp_path / "back"
    # as documented: torchrun -m r1mega.cli ... (a path to r1mega/cli.py would shadow stdlib logging)
    torchrun("-m", "r1mega.cli", "convert", "hf-to-r1mega", path, str(ckpt), "--tp", "2", nproc=2)
    # TP=2/PP=1 -> TP=1/PP=2 -> HF
    torchrun("-m", "r1mega.cli", "convert", "reshard", str(ckpt), str(pp2), "--pp", "2", nproc=2)
    layout = json.loads((pp2 / "meta.json").read_text())["layout"]
    assert (layout["tensor"], layout["pipeline"]) == (1, 2)
    torchrun("-m", "r1mega.cli", "convert", "r1mega-to-hf", str(pp2), str(back), nproc=1)
    from transformers import AutoModelForCausalLM
    got = AutoModelForCausalLM.from_pretrained(back).state_dict()
    ref = model.state_dict()
    assert set(got) == set(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k


@pytest.mark.vllm
def test_generate_from_an_r1mega_checkpoint(tmp_path):
    """`r1mega generate` takes an r1mega checkpoint as well as an HF directory."""
    import json

    from r1mega.rollout.tiny_model import build_tiny_qwen2

    hf = build_tiny_qwen2(str(tmp_path / "hf"), seed=2)
    ckpt = tmp_path / "ckpt"
    torchrun(os.path.join(REPO, "tests", "workers", "to_r1mega.py"), hf, str(ckpt), nproc=1)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ["what is one plus two", "hello"]) + "\n")
    out = tmp_path / "out.jsonl"
    r = _cli("generate", "--model", str(ckpt), "--prompts", str(prompts), "--out", str(out), "--n", "2",
             "rollout.max_new_tokens=5", "rollout.kv_cache_memory_mb=32", timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(len(row["responses"]) == 2 for row in rows)
