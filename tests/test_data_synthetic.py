"""Synthetic tasks: deterministic, held-out disjoint, answers right (is_equiv / countdown checker),
worked steps and the pretraining mix."""

import random

import pytest

from r1mega.data.prompts import load_prompts
from r1mega.data.synthetic import arithmetic_steps, completion, make_splits, pretraining_corpus, write_jsonl
from r1mega.rewards import RewardConfig, accuracy_reward, countdown_check, format_reward, is_equiv
from tests.sandbox_support import needs_userns


@pytest.mark.parametrize("task,knobs", [("arithmetic", dict(ops=("+", "-", "*"), max_digits=4)),
                                        ("countdown", dict(num_numbers=3, max_number=20)),
                                        ("code", dict(max_coef=9))])
def test_deterministic_and_disjoint(task, knobs):
    train, held = make_splits(task, 300, 50, seed=5, **knobs)
    assert (train, held) == make_splits(task, 300, 50, seed=5, **knobs)
    assert train != make_splits(task, 300, 50, seed=6, **knobs)[0]
    assert len(train) == 300 and len(held) == 50
    qs_train, qs_held = {r["question"] for r in train}, {r["question"] for r in held}
    assert len(qs_train) == 300 and not qs_train & qs_held
    assert make_splits(task, 100, 50, seed=5, **knobs)[1] == held  # eval set independent of n_train


def test_arithmetic_answers_correct():
    train, held = make_splits("arithmetic", 200, 20, seed=0, ops=("+", "-", "*"), min_digits=1, max_digits=3)
    for r in train + held:
        value = eval(f"{r['a']} {r['op']} {r['b']}")  # noqa: S307 (ints and one operator, generated here)
        assert is_equiv(str(value), r["answer"]) and r["question"] == f"What is {r['a']} {r['op']} {r['b']}?"


def test_arithmetic_steps():
    assert arithmetic_steps({"a": 58, "b": 67, "op": "+"}) == [
        "8+7=15, write 5, carry 1", "5+6+1=12, write 2, carry 1", "write the carry 1"]
    assert arithmetic_steps({"a": 503, "b": 78, "op": "-"}) == [
        "3-8: borrow, 13-8=5", "0-1-7: borrow, 9-7=2", "5-1-0=4"]
    assert arithmetic_steps({"a": 123, "b": 45, "op": "*"}) == ["123*5=615", "123*40=4920", "615+4920=5535"]


def test_too_narrow_task_is_an_error():
    with pytest.raises(ValueError, match="distinct questions"):
        make_splits("arithmetic", 200, 0, seed=0, ops=("+",), min_digits=1, max_digits=1)  # only 100 exist


def test_countdown_problems_are_solved_by_their_reference():
    train, held = make_splits("countdown", 100, 10, seed=1)
    assert all(countdown_check(r["answer"], r["numbers"], r["target"]) for r in train + held)


def test_rows_load_as_prompts(tmp_path):
    class TOK:  # one id per character
        encode = staticmethod(lambda text: [ord(c) for c in text])

    train, _ = make_splits("countdown", 5, 0, seed=0)
    recs = load_prompts(write_jsonl(train, str(tmp_path / "cd" / "train.jsonl")), TOK, max_prompt_len=2000)
    assert [r.answer for r in recs] == [r["answer"] for r in train]
    assert recs[0].metadata["numbers"] == train[0]["numbers"] and recs[0].metadata["task"] == "countdown"


def test_pretraining_mix_and_exclusion():
    cfg = RewardConfig()
    _, held = make_splits("arithmetic", 0, 200, seed=0)
    docs = pretraining_corpus(400, seed=0, format_rate=0.7, correct_rate=0.4, exclude=[r["question"] for r in held])
    assert docs == pretraining_corpus(400, seed=0, format_rate=0.7, correct_rate=0.4,
                                      exclude=[r["question"] for r in held])
    fmt = acc = 0
    for doc in docs:
        prompt, response = doc.rsplit("Assistant:", 1)
        question = prompt.rsplit("User: ", 1)[1].strip()
        assert question not in {r["question"] for r in held}
        a, op, b = question[len("What is "):-1].split()
        fmt += format_reward(response, None, {}, cfg).score
        acc += accuracy_reward(response, str(eval(f"{a}{op}{b}")), {}, cfg).score  # noqa: S307
    assert 0.6 < fmt / len(docs) < 0.8
    assert 0.3 < acc / len(docs) < 0.5  # unformatted "The answer is x." also scores: rule extraction
    all_right = pretraining_corpus(50, seed=1, format_rate=1.0, correct_rate=1.0)
    assert all(accuracy_reward(d.split("Assistant:")[-1], str(eval(d.split("What is ")[-1].split("?")[0])), {}, cfg).score
               for d in all_right)  # noqa: S307
    with pytest.raises(ValueError, match=r"format_rate \(1.5\)"):
        pretraining_corpus(1, format_rate=1.5)


@needs_userns
def test_code_task_reference_programs_pass_and_near_misses_fail_in_the_sandbox():
    """The code task's rows are their own reference: the solution passes the row's tests when run in
    the sandbox, and each kind of wrong program of the pretraining text fails them."""
    from r1mega.data.synthetic import code_completion
    from r1mega.rewards.code import code_reward

    train, held = make_splits("code", 24, 6, seed=5)
    assert not {r["question"] for r in train} & {r["question"] for r in held}
    cfg = RewardConfig(weights={"code": 1.0}, timeout_s=60, code_test_time_s=2.0)
    rng = random.Random(0)
    for row in held[:3]:
        right = code_completion(row, rng, formatted=True, correct=True)
        assert code_reward(right, None, row, cfg).score == 1.0, row
        for _ in range(2):
            wrong = code_completion(row, rng, formatted=rng.random() < 0.5, correct=False)
            got = code_reward(wrong, None, row, cfg)
            failure = got.info.get("first_failure", "")  # the program ran: a wrong answer or a crash
            assert got.score == 0.0 and ("wrong answer" in failure or "runtime error" in failure), (wrong, got.info)


# ------------------------------------------------------------------------- recheck_rate (long tail)

def _response(doc: str) -> str:
    return doc.rsplit("Assistant:", 1)[1]


def test_recheck_rate_zero_leaves_the_corpus_byte_identical():
    """The default corpus is the one made before the knob existed (hashes taken then), and rate 0
    draws no extra random number: every later document is unchanged too."""
    import hashlib
    import json

    def digest(docs):
        return hashlib.sha256(json.dumps(docs).encode()).hexdigest()[:16]

    before = {"arithmetic": "8df43b2a42d310dc", "countdown": "52d1779a0ce1f050", "code": "fa34dc7a6da472c4"}
    for task, knobs in (("arithmetic", dict(ops=["+", "-", "*"], max_digits=3)), ("countdown", {}), ("code", {})):
        docs = pretraining_corpus(300, seed=3, task=task, format_rate=0.6, correct_rate=0.5, **knobs)
        assert digest(docs) == before[task], task
        assert docs == pretraining_corpus(300, seed=3, task=task, format_rate=0.6, correct_rate=0.5, recheck_rate=0.0,
                                          recheck_times=(1, 2), **knobs)
    tiny_default = pretraining_corpus(500, seed=0, format_rate=0.5, correct_rate=0.3, template="r1_zero_compact",
                                      exclude=["What is 3 + 4?"], ops=["+"], min_digits=1, max_digits=2)
    assert digest(tiny_default) == "fc0ec9b91147defb"


def test_recheck_rate_share_and_repeated_steps():
    """At rate 0.2 about a fifth of the formatted documents re-check (2000 of them: 0.2 +- 0.027 at
    3 sigma), each repeating "check: <its own steps and conclusion>" 3-8 times, all counts seen,
    inside <think>; unformatted documents never re-check."""
    docs = pretraining_corpus(2000, seed=0, format_rate=1.0, correct_rate=0.5, recheck_rate=0.2,
                              ops=["+", "-"], max_digits=3)
    counts = []
    for doc in docs:
        think = _response(doc).split("<think> ", 1)[1].split(" </think>", 1)[0]
        first, *checks = think.split(" check: ")
        assert first.endswith(".") and first.split(". ")[-1].startswith("so ")
        assert all(c == first for c in checks), think  # the steps again, word for word
        counts.append(len(checks))
    rechecked = [n for n in counts if n]
    assert 0.173 < len(rechecked) / len(docs) < 0.227
    assert set(rechecked) == set(range(3, 9))
    steps = "8+7=15, write 5, carry 1. 5+6+1=12, write 2, carry 1. write the carry 1. so 58+67=125."
    row = {"task": "arithmetic", "a": 58, "b": 67, "op": "+", "answer": "125"}
    assert completion(row, random.Random(0), formatted=True, correct=True, recheck_rate=1.0, recheck_times=(2, 2)) == (
        f" <think> {steps} check: {steps} check: {steps} </think> <answer> \\boxed{{125}} </answer>")
    unformatted = pretraining_corpus(300, seed=0, format_rate=0.0, correct_rate=0.5, recheck_rate=1.0)
    assert not any("check:" in d for d in unformatted)
    countdown = pretraining_corpus(50, seed=0, task="countdown", format_rate=1.0, recheck_rate=1.0,
                                   recheck_times=(2, 2))
    assert all(_response(d).count(" check: ") == 2 for d in countdown)


def test_recheck_knobs_refused_with_their_names():
    with pytest.raises(ValueError, match=r"recheck_rate \(1.5\) must be in \[0, 1\]"):
        pretraining_corpus(1, recheck_rate=1.5)
    with pytest.raises(ValueError, match=r"recheck_rate \(-0.1\)"):
        pretraining_corpus(1, recheck_rate=-0.1)
    with pytest.raises(ValueError, match=r"recheck_times \(\[5, 2\]\) must be two integers"):
        pretraining_corpus(1, recheck_rate=0.1, recheck_times=(5, 2))
    with pytest.raises(ValueError, match=r"recheck_times \(\[0, 2\]\)"):
        pretraining_corpus(1, recheck_rate=0.1, recheck_times=(0, 2))
    with pytest.raises(ValueError, match=r"recheck_rate \(0.1\) .* code task"):
        pretraining_corpus(1, task="code", recheck_rate=0.1)


def test_every_tiny_preset_the_cli_offers_exists_and_its_rl_overrides_load():
    """`r1mega tiny --preset` choices and TinySettings.preset agree; each preset's RL overrides are
    valid config keys (a typo would fail only when its long run starts)."""
    from r1mega.cli import build_parser
    from r1mega.config import load_config
    from r1mega.recipes.tiny import PRESETS, TinySettings, default_config_path

    assert build_parser().parse_args(["tiny", "--preset", "longtail_skilled"]).preset == "longtail_skilled"
    for name in PRESETS:
        s = TinySettings.preset(name)
        load_config(default_config_path(), list(s.rl_overrides))
    skilled = TinySettings.preset("longtail_skilled")
    assert skilled.recheck_rate == 0.15 and skilled.layers == TinySettings().layers  # the default's model
    with pytest.raises(ValueError, match="unknown tiny preset 'nope'"):
        TinySettings.preset("nope")
