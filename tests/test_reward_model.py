"""Reward model (r1mega.reward_model): Bradley-Terry loss, pair data, batching, synthetic rules,
the train-rm command end to end (held-out pairwise accuracy rises), TP=2 / PP=2 / DP=2 steps
equal the single-process step, save -> load at another layout, scorer == training forward ==
a Hugging Face forward of the exported trunk + value head.

This file is also the multi-process worker: ``python tests/test_reward_model.py MODE OUT ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from r1mega.data.prompts import DataError, load_prompts  # noqa: E402
from r1mega.reward_model import bradley_terry_loss, load_pairs, make_pair, pair_metrics, pair_sums  # noqa: E402
from r1mega.reward_model.batch import for_schedule, pad_batches, pair_batches, sequence_batches  # noqa: E402
from r1mega.reward_model.synthetic import (general_prompts, make_preference_splits, rule_holds,  # noqa: E402
                                           write_jsonl)
from r1mega.types import Sample  # noqa: E402
from tests.numerics import EPS32, assert_rel_scale, assert_within, scale, sgd_weights_bound, transformer_rel  # noqa: E402


class CharTokenizer:
    """One id per character (ord % 200 + 3), eos 1, pad 0: independent of any trained vocab."""

    eos_id, pad_id, bos_id, vocab_size = 1, 0, None, 203

    def encode(self, text):
        return [ord(c) % 200 + 3 for c in text]


# ------------------------------------------------------------------------------------ pure parts
def test_bradley_terry_loss_float64_reference():
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(37, generator=g) * 5, torch.randn(37, generator=g) * 5
    ref = [-math.log(1.0 / (1.0 + math.exp(-(a - b)))) for a, b in zip(rc.double().tolist(), rr.double().tolist())]
    # fp32, elementwise: the margin d = r_c - r_r rounds by eps |d| / 2, which moves the loss (|dloss/dd| <= 1)
    # as much; the log / exp / log1p a few roundings of the loss itself: 2 eps (|d| + loss) per element
    loss = bradley_terry_loss(rc, rr).double()
    ref = torch.tensor(ref, dtype=torch.float64)
    assert_within(loss, ref, 2 * EPS32 * ((rc - rr).double().abs() + ref), "Bradley-Terry vs float64")
    big = bradley_terry_loss(torch.tensor([-200.0, 200.0]), torch.tensor([200.0, -200.0]))
    assert torch.isfinite(big).all() and big[0] == pytest.approx(400.0) and big[1] == 0.0
    rc.requires_grad_(True)
    bradley_terry_loss(rc, rr).sum().backward()  # d/dr_c = -sigmoid(r_r - r_c)
    torch.testing.assert_close(rc.grad, -torch.sigmoid(rr - rc.detach()))
    with pytest.raises(ValueError, match="same length"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(4))


def test_pair_sums_and_metrics_hand_case():
    rc, rr = torch.tensor([2.0, 0.0, 1.0, 5.0]), torch.tensor([1.0, 0.0, 3.0, -1.0])
    s = pair_sums(rc, rr)
    assert s["correct"] == 2.5  # 2 > 1, tie (1/2), 1 < 3, 5 > -1
    m = pair_metrics(s)
    both = torch.cat([rc, rr]).double()
    assert m["accuracy"] == 2.5 / 4 and m["margin"] == pytest.approx((1 + 0 - 2 + 6) / 4)
    assert m["score_mean"] == pytest.approx(both.mean().item())
    assert m["score_std"] == pytest.approx(both.std(unbiased=False).item())
    assert m["loss"] == pytest.approx(bradley_terry_loss(rc, rr).mean().item(), rel=1e-6)  # 4 terms: ~8 eps
    assert pair_metrics({}) == {"pairs": 0.0}


@pytest.mark.parametrize("rule", ["polite", "sum"])
def test_synthetic_rules(rule, tmp_path):
    train, held = make_preference_splits(120, 30, rule=rule, seed=3)
    assert len(train) == 120 and len(held) == 30
    key = lambda r: (r["prompt"], r["chosen"], r["rejected"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in held}
    for r in train + held:
        assert rule_holds(rule, r["prompt"], r["chosen"]) and not rule_holds(rule, r["prompt"], r["rejected"]), r
    assert make_preference_splits(120, 30, rule=rule, seed=3) == (train, held)
    assert make_preference_splits(120, 30, rule=rule, seed=4)[1] != held
    rows = general_prompts(5, rule=rule, seed=1)
    recs = load_prompts(write_jsonl(rows, str(tmp_path / "g.jsonl")), CharTokenizer(), template="plain")
    assert [r.kind for r in recs] == ["general"] * 5 and all(r.answer is None for r in recs)
    with pytest.raises(ValueError, match="unknown preference rule"):
        make_preference_splits(1, 1, rule="rude")
    with pytest.raises(DataError, match="distinct"):
        make_preference_splits(500, 0, rule="sum", max_operand=2)


def test_load_pairs_tokenises_and_rejects_bad_rows(tmp_path):
    tok = CharTokenizer()
    good = [{"prompt": "Q1", "chosen": "yes", "rejected": "no", "extra": 1},
            {"prompt": "Q2", "chosen": "same", "rejected": "same"},  # no preference: dropped
            {"prompt": "", "chosen": "a", "rejected": "bb"}]
    pairs = load_pairs(write_jsonl(good, str(tmp_path / "p.jsonl")), tok)
    assert [p.index for p in pairs] == [0, 2]
    assert pairs[0].prompt_ids == tuple(tok.encode("Q1")) and pairs[0].chosen_ids == tuple(tok.encode("yes") + [1])
    assert pairs[0].rejected == tok.encode("Q1") + tok.encode("no") + [1] and pairs[1].prompt_ids == ()
    assert load_pairs(str(tmp_path / "p.jsonl"), tok, append_eos=False)[0].chosen_ids == tuple(tok.encode("yes"))
    # other field names, no prompt field (the texts hold the whole conversation), parquet
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist([{"good": "Human: hi Assistant: hello", "bad": "Human: hi Assistant: go"}]),
                   str(tmp_path / "p.parquet"))
    (p,) = load_pairs(str(tmp_path / "p.parquet"), tok, prompt_key=None, chosen_key="good", rejected_key="bad")
    assert p.prompt_ids == () and p.chosen == tok.encode("Human: hi Assistant: hello") + [1]

    def bad(rows, match, **kw):
        path = write_jsonl(rows, str(tmp_path / "bad.jsonl"))
        with pytest.raises(DataError, match=match):
            load_pairs(path, tok, **kw)

    bad([{"prompt": "q", "chosen": "a"}], r"bad\.jsonl: line 1 has no 'rejected' field.*keys: chosen, prompt")
    bad([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": 3, "rejected": "b"}],
        r"line 2: 'chosen' must be a string, got int")
    bad([{"prompt": "q", "chosen": "  ", "rejected": "b"}], r"line 1: 'chosen' is empty")
    bad([{"prompt": "q" * 10, "chosen": "a" * 6, "rejected": "b"}], r"line 1: prompt \+ response is 17 tokens, "
        r"longer than model.max_seq_len \(16\)", max_len=16)
    bad([{"prompt": "q", "chosen": "a", "rejected": "a"}], "no usable preference pairs")
    bad([], "empty")


def test_pair_and_sequence_batches():
    g = torch.Generator().manual_seed(1)
    pairs = [make_pair(torch.randint(0, 50, (int(torch.randint(1, 6, (1,), generator=g)),), generator=g).tolist(),
                       torch.randint(0, 50, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist(),
                       torch.randint(0, 50, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist())
             for _ in range(11)]
    mbs = pair_batches(pairs, token_budget=40)
    assert sorted(i for mb in mbs for i in mb.ids) == list(range(11))
    for mb in mbs:
        B, T = mb.tokens.shape
        assert B * T <= 40 and B == mb.rows == 2 * mb.pairs
        for r, i in enumerate(mb.ids):
            for row, seq in ((r, pairs[i].chosen), (mb.pairs + r, pairs[i].rejected)):
                assert mb.tokens[row, :len(seq)].tolist() == seq and mb.last[row] == len(seq) - 1
    padded = pad_batches(mbs)
    assert len({tuple(b.tokens.shape) for b in padded}) == 1
    for a, b in zip(mbs, padded):
        assert torch.equal(b.tokens[:a.rows, :a.tokens.shape[1]], a.tokens) and torch.equal(b.last[:a.rows], a.last)
    with pytest.raises(ValueError, match=r"preference pair 1 needs 2 x 9 = 18 tokens .* \(16\)"):
        pair_batches([make_pair([1] * 4, [2] * 5, [3])], token_budget=16)
    inter = for_schedule(mbs[:3], pipeline=2, interleaved=True)  # interleaved: a multiple of PP, one shape
    assert len(inter) == 4 and inter[3].rows == 0 and len({tuple(b.tokens.shape) for b in inter}) == 1
    assert for_schedule(inter, 2, True) == inter and for_schedule(mbs, 1, False) == mbs
    seqs = [[7] * n for n in (5, 1, 9, 3, 3)]
    sbs = sequence_batches(seqs, token_budget=10)
    assert sorted(i for b in sbs for i in b.ids) == list(range(5))
    assert all(b.tokens.numel() <= 10 and b.last.tolist() == [len(seqs[i]) - 1 for i in b.ids] for b in sbs)


def test_mix_rewards():
    from r1mega.reward_model import mix_rewards

    samples = [Sample(prompt_ids=[1], response_ids=[2], group_id=i // 2, kind=k, reward=0.5)
               for i, k in enumerate(["reasoning", "general", "general", "reasoning"])]
    assert mix_rewards(samples, torch.tensor([1.5, -2.0]), weight=0.5) == 2
    assert [s.reward for s in samples] == [0.5, 0.75, -1.0, 0.5]
    assert samples[1].reward_breakdown == {"reward_model": 1.5} and samples[0].reward_breakdown == {}
    with pytest.raises(ValueError, match="2 samples of kind 'general'"):
        mix_rewards(samples, [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        mix_rewards(samples, [1.0, float("nan")])


def test_scorer_rejects_bad_inputs():
    from r1mega.models.arch import ModelArch
    from r1mega.reward_model.model import RewardModel, RewardModelMeta
    from r1mega.reward_model.scorer import RewardModelScorer

    arch = ModelArch(family="qwen2", vocab_size=100, hidden_size=8, ffn_hidden_size=8, num_layers=1, num_heads=1,
                     num_kv_heads=1, head_dim=8)
    rm = RewardModel([], arch, None, RewardModelMeta(hidden_size=8, vocab_size=100, max_seq_len=16))
    sc = RewardModelScorer(rm, token_budget=64)
    for seqs, match in (([], "empty list"), ([[1, 2], []], "sequence 1 is empty"),
                        ([[1] * 17], r"sequence 0 has 17 tokens, longer than the reward model's max_len \(16\)"),
                        ([[5, 100]], r"token id 100 outside the reward model's vocabulary \[0, 100\)"),
                        ([[-1]], "token id -1"), ("abc", "list of token-id lists")):
        with pytest.raises((ValueError, TypeError), match=match):
            sc.score(seqs)
    with pytest.raises(ValueError, match=r"sequence 0 has 9 tokens, more than the scorer's micro-batch token budget"):
        RewardModelScorer(rm, token_budget=8).score([[1] * 9])


def test_cli_parser_accepts_overrides_after_options():
    from r1mega.reward_model.__main__ import parse
    from r1mega.reward_model.cmd import add_parser

    a = parse(["c.yaml", "run.seed=1", "--pairs", "p.jsonl", "--steps", "3", "optimizer.lr=0.1"])
    assert (a.config, a.pairs, a.steps, a.batch, a.overrides) == ("c.yaml", "p.jsonl", 3, 32,
                                                                  ["run.seed=1", "optimizer.lr=0.1"])
    assert a.fn.__name__ == "cmd_train_rm" and a.prompt_key == "prompt" and a.eval_pairs is None
    with pytest.raises(SystemExit):
        parse(["c.yaml"])  # --pairs is required
    with pytest.raises(SystemExit):
        parse(["c.yaml", "--pairs", "p", "--bogus"])
    p = argparse.ArgumentParser()  # what r1mega.cli registers
    add_parser(p.add_subparsers(dest="command", required=True))
    assert p.parse_args(["train-rm", "c.yaml", "a=1", "--pairs", "p"]).overrides == ["a=1"]


def test_train_rm_command_errors(tmp_path, capsys):
    """Config and data errors end the command with exit code 2 and a message naming the problem."""
    from r1mega.reward_model.__main__ import main
    from r1mega.rollout.tiny_model import build_tiny_tokenizer

    cfg = tmp_path / "c.yaml"
    cfg.write_text("run:\n  steps: 3\n")
    assert main([str(cfg), "--pairs", "p.jsonl"]) == 2
    assert "model.hf_path is required" in capsys.readouterr().err
    tok_dir = tmp_path / "tok"
    build_tiny_tokenizer().save_pretrained(str(tok_dir))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({
        "architectures": ["Qwen2ForCausalLM"], "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 2}))
    pairs = write_jsonl([{"prompt": "q", "chosen": "a"}], str(tmp_path / "p.jsonl"))
    assert main([str(cfg), "--pairs", pairs, f"model.hf_path={tmp_path / 'model'}",
                 f"model.tokenizer_path={tok_dir}"]) == 2
    assert "p.jsonl: line 1 has no 'rejected' field" in capsys.readouterr().err
    assert main([str(cfg), "--pairs", pairs, "model.hf_pth=x"]) == 2
    assert "hf_pth" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ workers
LAYOUTS = {"tp2": (2, 1, None), "pp2": (1, 2, None), "vp2": (1, 2, 2), "dp2": (1, 1, None)}  # 2 processes
# Tolerances (tests/numerics.py: fp32 eps x the longest reduction K x the chained depth D, of the values' scale).
# The parity model (qwen2, 4 layers, hidden 64, ffn 96; 16 sequences of <= 14 tokens): forward K = 96,
# D = 9 x 4 + 2 = 38 -> 4.3e-4; a step adds the backward and the weight gradients' sums over <= 224
# tokens: K = 224, D = 76 -> 2.0e-3.
PARITY_LR = 0.2  # SGD
REL_PARITY_FWD, REL_PARITY_STEP = transformer_rel(hidden=64, ffn=96, layers=4, seq=14, tokens=16 * 14)
# The trained reward model (tiny qwen2: 2 layers, hidden 64, ffn 128; sequences < 20 tokens), forward:
# K = 128, D = 20 -> 3.0e-4.
REL_RM_FWD, _ = transformer_rel(hidden=64, ffn=128, layers=2, seq=20)
def _seqs(vocab: int, n: int = 9, seed: int = 5) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (int(torch.randint(1, 20, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def _pairs(vocab: int):
    g = torch.Generator().manual_seed(0)
    r = lambda lo, hi: torch.randint(0, vocab, (int(torch.randint(lo, hi, (1,), generator=g)),),  # noqa: E731
                                     generator=g).tolist()
    return [make_pair(r(1, 6), r(1, 10), r(1, 10), index=i) for i in range(8)]


def _init(tp: int, pp: int, arch, vp: int | None = None):
    from r1mega.config import load_config
    from r1mega.parallel.init import init_parallel

    cfg = load_config(None, [f"parallel.tensor={tp}", f"parallel.pipeline={pp}", "optimizer.name=sgd",
                             *([f"parallel.virtual_pipeline={vp}"] if vp else []), "optimizer.clip_grad=0",
                             f"optimizer.lr={PARITY_LR}", "parallel.distributed_optimizer=false", "model.max_seq_len=512",
                             "trainer.micro_batch_tokens=48"])
    return cfg, init_parallel(cfg.parallel, arch, seed=1)


def _gathered(rm) -> dict:
    from r1mega.models import iter_hf_weights
    from r1mega.reward_model.model import value_head_state

    with rm.trunk_only() as chunks:
        w = {k: v.clone() for k, v in iter_hf_weights(chunks, rm.arch)}
    head = value_head_state(rm)
    if head is not None:
        w.update({f"value_head.{k}": v for k, v in head.items()})
    return w


def parity_run(hf: str, tp: int, pp: int, vp: int | None = None) -> dict:
    """Two SGD steps (no clipping) on 8 fixed pairs (global batch; split over DP ranks), at TP x PP (x VP)."""
    from megatron.core import parallel_state as ps

    from r1mega.models import read_hf_config
    from r1mega.reward_model import RewardModelScorer, RewardTrainer, build_reward_model

    arch = read_hf_config(hf)
    cfg, layout = _init(tp, pp, arch, vp)
    rm = build_reward_model(hf, layout, cfg.model, seed=3)
    pairs = _pairs(arch.vocab_size)
    dp, d = layout.data, ps.get_data_parallel_rank()
    share = pairs[d * 8 // dp:(d + 1) * 8 // dp]
    scorer = RewardModelScorer(rm, token_budget=48)
    flat = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    before = scorer.score_all(flat)
    initial = _gathered(rm)
    trainer = RewardTrainer(cfg, rm, total_steps=2)
    steps = [trainer.train_step(share, 8) for _ in range(2)]
    return {"before": before, "steps": steps, "after": scorer.score_all(flat), "weights": _gathered(rm),
            "initial": initial}


def _load_and_score(rm_dir: str, tp: int, pp: int, seqs) -> torch.Tensor:
    from r1mega.models import read_hf_config
    from r1mega.reward_model import RewardModelScorer, load_reward_model

    _, layout = _init(tp, pp, read_hf_config(rm_dir))
    sc = RewardModelScorer(load_reward_model(rm_dir, layout, max_seq_len=64), token_budget=64)
    return sc.score_all(seqs)


def worker_single(out: str, hf: str, cfg_path: str, train: str, held: str) -> None:
    """One process: train-rm end to end, the reference parity run, scorer checks."""
    from r1mega.models import read_hf_config
    from r1mega.reward_model import RewardModelScorer, load_reward_model
    from r1mega.reward_model.__main__ import main

    res = {}
    rc = main([cfg_path, "--pairs", train, "--eval-pairs", held, "--steps", "20", "--batch", "32",
               f"run.output_dir={out}", "run.name=rm"])
    assert rc == 0
    # resume: 2 steps, then on to 4 from the step-2 checkpoint, against 4 steps in one go
    common = [cfg_path, "--pairs", train, "--batch", "32", f"run.output_dir={out}"]
    for steps, name in ((2, "resumed"), (4, "resumed"), (4, "straight")):
        assert main([*common, "--steps", str(steps), f"run.name={name}"]) == 0
    from r1mega.logging.metrics import read_metrics
    from safetensors.torch import load_file
    res["resume"] = {name: {"loss": [m["train/loss"] for m in read_metrics(os.path.join(out, name, "reward_model_logs"))
                                     if "train/loss" in m],
                            "head": load_file(os.path.join(out, name, "reward_model", "value_head.safetensors")),
                            "ckpts": sorted(os.listdir(os.path.join(out, name, "reward_model_checkpoints")))}
                     for name in ("resumed", "straight")}
    res["parity"] = parity_run(hf, 1, 1)
    rm_dir = os.path.join(out, "rm", "reward_model")
    _, layout = _init(1, 1, read_hf_config(rm_dir))
    rm = load_reward_model(rm_dir, layout, max_seq_len=64)
    seqs = _seqs(rm.arch.vocab_size)
    one = RewardModelScorer(rm, token_budget=64).score(seqs)
    many = RewardModelScorer(rm, token_budget=20).score(seqs[::-1]).flip(0)  # other batching and order
    norm = RewardModelScorer(rm, token_budget=64, normalize=True).score(seqs)
    res.update(seqs=seqs, scores=one, scores_small_batches=many, normalized=norm, meta=rm.meta.__dict__)
    torch.save(res, os.path.join(out, "single.pt"))


def worker_multi(out: str, hf: str, rm_dir: str) -> None:
    """Two processes: TP=2, PP=2, interleaved PP=2 x VP=2 and DP=2 parity runs; the TP=1-saved model
    loaded at TP=2 / PP=2 / DP=2."""
    import torch.distributed as dist

    from r1mega.models import read_hf_config

    res = {}
    for name, (tp, pp, vp) in LAYOUTS.items():
        res[name] = parity_run(hf, tp, pp, vp)
    seqs = _seqs(read_hf_config(rm_dir).vocab_size)
    for name, (tp, pp) in {"tp2": (2, 1), "pp2": (1, 2), "dp2": (1, 1)}.items():
        res[f"loaded_{name}"] = _load_and_score(rm_dir, tp, pp, seqs)
    if dist.get_rank() == 0:
        torch.save(res, os.path.join(out, "multi.pt"))


# ------------------------------------------------------------------------------------ multi-process tests
@pytest.fixture(scope="module")
def single(tmp_path_factory):
    from r1mega.rollout.tiny_model import build_tiny_qwen2
    from tests.dist import torchrun
    from tests.hf_models import make_hf_model

    root = tmp_path_factory.mktemp("rm")
    # tied embeddings (PP: a shared output-layer copy), odd vocab (padded at TP=2), QKV bias; 4 layers for PP x VP
    hf, _ = make_hf_model("qwen2", str(root), seed=7, num_hidden_layers=4)
    tiny = build_tiny_qwen2(str(root / "tiny"), hidden=64, heads=2, kv_heads=2, layers=2, intermediate=128,
                            init_std=0.02, tie_embeddings=False)  # untied: the LM head must stay frozen
    train, held = make_preference_splits(400, 100, rule="polite", seed=0)
    cfg = root / "rm.yaml"
    cfg.write_text(json.dumps({"model": {"hf_path": tiny, "max_seq_len": 512}, "optimizer": {"lr": 1e-3},
                               "trainer": {"micro_batch_tokens": 1024}, "run": {"tensorboard": False, "seed": 0}}))
    torchrun(__file__, "single", str(root), hf, str(cfg), write_jsonl(train, str(root / "train.jsonl")),
             write_jsonl(held, str(root / "held.jsonl")), nproc=1, timeout=240)
    return root, hf, tiny, torch.load(root / "single.pt")


@pytest.mark.multiproc
def test_train_rm_learns_the_rule_and_exports(single):
    """Held-out pairwise accuracy after 20 steps vs before; the exported directory."""
    from safetensors.torch import load_file

    root, _, tiny, res = single
    summary = json.loads((root / "rm" / "reward_model_logs" / "summary.json").read_text())
    before, after = summary["eval/accuracy_before"], summary["eval/accuracy_after"]
    assert after >= 0.9 and after >= before + 0.15, (before, after)
    assert summary["train/loss_last"] < 0.5 * summary["train/loss_first"]
    lines = [json.loads(x) for x in (root / "rm" / "reward_model_logs" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "train/loss" in x] == list(range(1, 21))
    out = root / "rm" / "reward_model"
    meta = json.loads((out / "reward_model.json").read_text())
    assert meta["eval_accuracy"] == after and meta["steps"] == 20 and meta["score_std"] > 0
    trained, init = load_file(str(out / "model.safetensors")), load_file(os.path.join(tiny, "model.safetensors"))
    assert torch.equal(trained["lm_head.weight"], init["lm_head.weight"])  # unused LM head: frozen
    assert not torch.equal(trained["model.embed_tokens.weight"], init["model.embed_tokens.weight"])  # trunk trained


@pytest.mark.multiproc
def test_train_rm_resumes_exactly(single):
    """2 steps, then `train-rm --steps 4` again continues from the step-2 checkpoint (trunk, value head,
    Adam state, schedule): the same losses and value head as 4 steps in one go."""
    r = single[3]["resume"]
    assert len(r["straight"]["loss"]) == 4 and len(r["resumed"]["loss"]) == 4, r
    # one process either way, the same batches, weights and Adam state: the same arithmetic, so exact
    # (the losses go through metrics.jsonl, whose floats round-trip exactly)
    assert r["resumed"]["loss"] == r["straight"]["loss"]
    assert r["straight"]["loss"][3] != r["straight"]["loss"][0]
    assert set(r["resumed"]["head"]) == set(r["straight"]["head"])
    for k, v in r["straight"]["head"].items():
        assert torch.equal(r["resumed"]["head"][k], v), k
    assert r["resumed"]["ckpts"] == ["step_000002", "step_000004"] and r["straight"]["ckpts"] == ["step_000004"]


def test_scores_equal_hf_forward_and_are_batching_invariant(single):
    """Scorer == HF transformers' final-normed hidden state at the last token . w + b (so Megatron's
    post_process=False output includes the final norm), whatever the micro-batching and order."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    root, _, _, res = single
    out = str(root / "rm" / "reward_model")
    head = load_file(os.path.join(out, "value_head.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch.stack([model.model(torch.tensor([s])).last_hidden_state[0, -1] @ head["weight"][0] + head["bias"][0]
                           for s in res["seqs"]])
    # two fp32 forwards of the same model (Megatron vs transformers kernels): REL_RM_FWD of the scores' scale
    assert_rel_scale(res["scores"], ref, REL_RM_FWD, "scorer vs HF forward")
    assert res["scores"].std() > 0.1  # distinct, non-trivial scores
    # other micro-batches (other padding and shapes): the same bound
    assert_rel_scale(res["scores_small_batches"], res["scores"], REL_RM_FWD, "scores at other batching")
    m = res["meta"]
    # the same micro-batches as res["scores"], then the same elementwise expression: exact
    assert torch.equal(res["normalized"], (res["scores"] - m["score_mean"]) / m["score_std"])




@pytest.mark.multiproc
def test_scorer_equals_training_forward(single):
    """Step 1's loss, accuracy and margin (training forward) from the scorer's rewards before it."""
    par = single[3]["parity"]
    r = par["before"]
    rc, rr = r[:8], r[8:]
    s1 = par["steps"][0]
    # the scorer's forward (sequence micro-batches, eval mode) vs the training forward (pair micro-batches)
    # at the same weights: scores within e = REL_PARITY_FWD * scale; the BT loss and the margin move by at
    # most 2e (loss: 1-Lipschitz in the margin, a difference of two scores); the accuracy counts signs of
    # margins, equal while no margin is within 2e of 0
    e = REL_PARITY_FWD * scale(r)
    assert_within(s1["loss"], bradley_terry_loss(rc, rr).mean().item(), 2 * e, "step-1 loss vs scorer")
    assert (rc - rr).abs().min() > 2 * e
    assert s1["accuracy"] == pair_metrics(pair_sums(rc, rr))["accuracy"]
    assert_within(s1["margin"], (rc - rr).mean().item(), 2 * e, "step-1 margin vs scorer")
    assert s1["grad_norm"] > 0 and not torch.allclose(par["after"], par["before"])


@pytest.mark.multiproc
def test_tp2_pp2_vp2_dp2_and_relayout_equal_single_process(single, tmp_path):
    from tests.dist import torchrun

    root, hf, _, res = single
    torchrun(__file__, "multi", str(tmp_path), hf, str(root / "rm" / "reward_model"), nproc=2, timeout=300)
    multi = torch.load(tmp_path / "multi.pt")
    ref = res["parity"]
    # Bounds (REL_PARITY_* above: fp32 eps x the longest reduction x the chained depth):
    # before: one forward at equal weights. Weights: SGD steps 1 and 2 (sgd_weights_bound). After: the
    # forward's rounding plus the weights' difference, whose effect on a score is at most the same
    # fraction (3 REL_PARITY_STEP: two steps) of what the update did to the scores (|after - before|).
    before_e = REL_PARITY_FWD * scale(ref["before"])
    after_e = REL_PARITY_FWD * scale(ref["after"]) + 3 * REL_PARITY_STEP * scale(ref["after"] - ref["before"])
    # the stats: step 1 at equal weights (before_e), step 2 at weights one step apart (after_e covers it);
    # loss and margin within 2e (see test_scorer_equals_training_forward), the score mean within e, the
    # accuracy (signs of margins) exact while every margin is further than 2e from 0, the gradient norm
    # within REL_PARITY_STEP plus the rounding of its sum of squares over every parameter, N eps / 2
    for scores in (ref["before"], ref["after"]):
        assert (scores[:8] - scores[8:]).abs().min() > 2 * after_e
    n_params = sum(v.numel() for v in ref["weights"].values())
    for name in LAYOUTS:
        got = multi[name]
        assert_within(got["before"], ref["before"], before_e, f"{name} before")
        assert_within(got["after"], ref["after"], after_e, f"{name} after")
        for i, (a, b) in enumerate(zip(ref["steps"], got["steps"])):
            e = before_e if i == 0 else after_e
            for k, allowed in (("loss", 2 * e), ("margin", 2 * e), ("score_mean", e),
                               ("grad_norm", (REL_PARITY_STEP + n_params * EPS32 / 2) * a["grad_norm"])):
                assert_within(b[k], a[k], allowed, f"{name} step {i + 1} {k}")
            assert b["accuracy"] == a["accuracy"], (name, i)
        assert set(got["weights"]) == set(ref["weights"])
        for k, v in ref["weights"].items():
            # the value-head bias: d(r_c - r_r)/db = 0, its gradient is the rounding residue of 16 terms
            # summing to at most 2 (|dL/dr| <= 1/8 per score): terms of lr x 2 per step
            terms = PARITY_LR * 2 if k == "value_head.bias" else 0.0
            assert_within(got["weights"][k], v, sgd_weights_bound(v, ref["initial"][k], REL_PARITY_STEP, steps=2,
                                                                  terms_scale=terms), f"{name} {k}")
    for name in ("tp2", "pp2", "dp2"):  # the trained reward model, forward only
        assert_rel_scale(multi[f"loaded_{name}"], res["scores"], REL_RM_FWD, f"saved at TP=1, loaded at {name}")


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    {"single": worker_single, "multi": worker_multi}[mode](*rest)
