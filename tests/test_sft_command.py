"""`r1mega sft` end to end in 2 real processes (data parallel): chat + prompt/response data,
metrics with the held-out loss, checkpoints, resume where it stopped, HF export that
transformers loads and whose held-out loss went down."""

import json

import pytest
import torch

from tests.dist import torchrun

pytestmark = pytest.mark.multiproc


def _rows(n, seed):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        a, b = (int(x) for x in torch.randint(0, 10, (2,), generator=g))
        if i % 2:
            rows.append({"prompt": f"{a} plus {b} equals", "response": f" {a + b}"})
        else:
            rows.append({"messages": [{"role": "user", "content": f"{a} plus {b}"},
                                      {"role": "assistant", "content": f"{a + b}"}]})
    return rows


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _hf_loss(model_dir, rows):
    """Mean response NLL (prompt/response rows, EOS included) under transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    nll, n = 0.0, 0
    with torch.no_grad():
        for r in rows:
            if "prompt" not in r:
                continue
            p = tok.encode(r["prompt"], add_special_tokens=False)
            resp = tok.encode(r["response"], add_special_tokens=False) + [tok.eos_token_id]
            logp = torch.log_softmax(model(torch.tensor([p + resp])).logits[0].double(), -1)
            nll -= float(logp[len(p) - 1:-1].gather(1, torch.tensor(resp)[:, None]).sum())
            n += len(resp)
    return nll / n


def test_sft_command_trains_checkpoints_resumes_and_exports(tmp_path):
    from r1mega.logging.metrics import read_metrics
    from r1mega.rollout.tiny_model import build_tiny_qwen2

    hf = build_tiny_qwen2(str(tmp_path / "base"), hidden=64, heads=1, kv_heads=1, intermediate=128, seed=3,
                          init_std=0.02)
    train, held = _write(tmp_path / "train.jsonl", _rows(64, 0)), _write(tmp_path / "eval.jsonl", _rows(16, 1))
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"model:\n  hf_path: {hf}\nsft:\n  eval: {held}\n")
    args = ["-m", "r1mega.cli", "sft", str(cfg), "--data", train,
            "sft.examples_per_step=16", "sft.eval_every=2", "optimizer.lr=3e-3", "optimizer.warmup_steps=0",
            f"run.output_dir={tmp_path}", "run.name=sft", "run.save_every=2", "run.tensorboard=false",
            "trainer.micro_batch_tokens=128"]
    torchrun(*args, "run.steps=3", nproc=2)
    run = tmp_path / "sft"
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("step_")) == \
        ["step_000002", "step_000003"]
    # resumes at step 3 with a lower lr: it takes effect (Megatron's scheduler would keep the
    # checkpoint's) and every change is logged; a change of the prompt order is refused by name
    proc = torchrun(*args, "run.steps=6", "trainer.packing=packed", "optimizer.lr=1e-3", nproc=2)
    out = proc.stdout + proc.stderr
    assert "changed since the checkpoint: optimizer.lr 0.003 -> 0.001" in out, out[-3000:]
    assert "changed since the checkpoint: run.steps 3 -> 6" in out
    assert "changed since the checkpoint: trainer.packing 'auto' -> 'packed'" in out
    rows = read_metrics(run / "metrics.jsonl")
    steps = [r["step"] for r in rows if "sft/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    lrs = [r["sft/lr"] for r in rows if "sft/lr" in r]
    assert lrs[:3] == pytest.approx([3e-3] * 3) and lrs[3:] == pytest.approx([1e-3] * 3), lrs
    evals = [r["sft/eval_loss"] for r in rows if "sft/eval_loss" in r]
    assert len(evals) >= 4 and all(e == e for e in evals)
    # the exported model is a transformers model whose held-out loss fell from the base's
    before, after = _hf_loss(hf, _rows(16, 1)), _hf_loss(str(run / "hf"), _rows(16, 1))
    assert after < before - 0.5, (before, after)
