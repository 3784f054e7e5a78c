"""Routing replay's pure parts, by hand: the compact storage, vLLM step rows -> (request, position),
micro-batch placement, the replay hook, sequence-parallel slices, partial rollout, config refusals.
(The real engine and trainer: tests/test_routing_replay.py.)"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from r1mega.models.routing_replay import RoutingTap, _slice, record, set_targets
from r1mega.rollout.routing_capture import (_collect, compact, coverage, expand, from_native, recorded,
                                            storage_dtype)
from r1mega.types import Sample


def test_storage_is_uint8_up_to_254_experts_with_255_for_not_routed():
    ids = torch.tensor([[[3, 7]], [[-1, -1]], [[0, 253]]])                      # (T=3, L=1, k=2)
    small = compact(ids, 254)
    assert small.dtype == torch.uint8 and small[1].tolist() == [[255, 255]]
    assert torch.equal(expand(small), ids)
    big = compact(torch.tensor([[[300, 1]], [[-1, -1]]]), 384)
    assert big.dtype == torch.int16 and storage_dtype(255) == torch.int16
    assert expand(big).tolist() == [[[300, 1]], [[-1, -1]]]
    assert recorded(small).tolist() == [True, False, True]


def test_native_vllm_output_keeps_the_moe_layers_and_pads_the_last_token():
    # vLLM: (prompt + generated - 1, every decoder layer, k); layer 0 dense (zeros), layers 1-2 MoE
    arr = np.array([[[0, 0], [1, 2], [3, 4]], [[0, 0], [5, 6], [7, 0]]], dtype=np.uint8)  # 2 tokens fed
    out = expand(from_native(arr, [1, 2], rows=3, num_experts=8))
    assert out.tolist() == [[[1, 2], [3, 4]], [[5, 6], [7, 0]], [[-1, -1], [-1, -1]]]


def _worker(steps):
    return SimpleNamespace(model_runner=SimpleNamespace(_r1mega_routes={"steps": steps, "layers": {}}))


def _step(req_ids, starts, counts, rows_per_layer):
    total = sum(counts)
    ids = [torch.tensor(r, dtype=torch.int16).view(total, -1) for r in rows_per_layer]
    return (list(req_ids), np.array(starts), np.array(counts), total), ids


def test_step_rows_are_scattered_to_each_request_and_position():
    steps = [
        # prefill: request a (3 prompt tokens), request b (2); 2 MoE layers, top-1
        _step(["a-x", "b-y"], [0, 0], [3, 2], [[10, 11, 12, 20, 21], [30, 31, 32, 40, 41]]),
        # decode: b first (the runner may reorder), then a
        _step(["b-y", "a-x"], [2, 3], [1, 1], [[22, 13], [42, 33]]),
        ((["a-x"], np.array([4]), np.array([0]), 0), [None, None]),  # a step without a forward
    ]
    out = _collect(_worker(steps))
    assert out["a-x"][:, :, 0].tolist() == [[10, 30], [11, 31], [12, 32], [13, 33]]
    assert out["b-y"][:, :, 0].tolist() == [[20, 40], [21, 41], [22, 42]]


def test_a_recomputed_request_keeps_its_last_routing_and_cached_prefix_rows_stay_unrouted():
    steps = [_step(["a-x"], [2], [2], [[5, 6]]),        # positions 0-1 came from the prefix cache
             _step(["a-x"], [2], [2], [[7, 8]])]        # preempted and recomputed
    out = _collect(_worker(steps))
    assert out["a-x"][:, 0, 0].tolist() == [-1, -1, 7, 8]


def test_coverage_counts_fed_tokens_and_prompt_tokens():
    ids = torch.tensor([[[1]], [[-1]], [[2]], [[3]], [[-1]]])                   # P=2, R=3; last never fed
    s = Sample(prompt_ids=[1, 2], response_ids=[3, 4, 5], group_id=0, routed_experts=compact(ids, 8))
    assert coverage([s]) == {"rollout/routed_share": 3 / 4, "rollout/routed_prompt_share": 1 / 2}
    assert coverage([Sample(prompt_ids=[1], response_ids=[2], group_id=0)]) == {}


def test_micro_batches_place_each_sample_routing_at_its_tokens():
    from r1mega.trainer.batch import build_micro_batch

    def sample(P, R, base):
        ids = torch.arange(base, base + (P + R) * 2).view(P + R, 1, 2) % 8
        return Sample(prompt_ids=[1] * P, response_ids=[2] * R, group_id=0, rollout_logprobs=[-1.0] * R,
                      routed_experts=compact(ids, 8)), ids

    (a, ra), (b, rb) = sample(2, 3, 0), sample(1, 2, 5)
    c = Sample(prompt_ids=[1, 1], response_ids=[2], group_id=1, rollout_logprobs=[-1.0])   # no routing
    padded = build_micro_batch([a, b, c], [0, 1, 2])
    assert padded.routing.shape == (3, 5, 1, 2) and padded.routing.dtype == torch.int16
    assert torch.equal(padded.routing[0].long(), ra)
    assert torch.equal(padded.routing[1, :3].long(), rb) and (padded.routing[1, 3:] == -1).all()
    assert (padded.routing[2] == -1).all()
    packed = build_micro_batch([a, b, c], [0, 1, 2], packed=True, row_len=12)
    assert packed.routing.shape == (1, 12, 1, 2)
    assert torch.equal(packed.routing[0, :5].long(), ra) and torch.equal(packed.routing[0, 5:8].long(), rb)
    assert (packed.routing[0, 8:] == -1).all()
    assert build_micro_batch([c], [0]).routing is None
    bad = a.replace(routed_experts=compact(torch.zeros(4, 1, 2, dtype=torch.long), 8))
    with pytest.raises(ValueError, match="routed_experts of shape"):
        build_micro_batch([bad], [0])


def _topk(scores, topk, num_groups=None, group_topk=None):
    return torch.topk(scores, k=topk, dim=1)


def test_the_tap_replays_recorded_rows_and_counts_disagreements():
    scores = torch.tensor([[0.9, 0.5, 0.1, 0.0], [0.1, 0.2, 0.8, 0.7], [0.3, 0.9, 0.6, 0.0]])
    tap = RoutingTap(layer=1, slot=0, recompute=False)
    tap.target = torch.tensor([[1, 0], [3, 0], [-1, -1]])      # row 0: the same set; row 1 differs; row 2 none
    tap.replay, tap.measure = True, True
    vals, ids = tap.get_replay_topk(scores, 2, default_compute_topk=_topk)
    assert ids.tolist() == [[1, 0], [3, 0], [1, 2]]
    assert torch.equal(vals, scores.gather(1, ids))           # the replayed experts' own scores
    assert tap.counts.tolist() == [2.0, 1.0, 0.0]             # 2 recorded, 1 own choice differs, none used
    tap.replay = False                                        # compare only
    _, ids = tap.get_replay_topk(scores, 2, default_compute_topk=_topk)
    assert ids.tolist() == [[0, 1], [2, 3], [1, 2]] and tap.counts.tolist() == [4.0, 2.0, 1.0]
    tap.clear()
    _, ids = tap.get_replay_topk(scores, 2, default_compute_topk=_topk)  # no target: the router's own
    assert ids.tolist() == [[0, 1], [2, 3], [1, 2]] and tap.counts.tolist() == [4.0, 2.0, 1.0]


def test_recompute_replays_the_targets_of_its_first_forward_in_order():
    scores = torch.rand(2, 4, generator=torch.Generator().manual_seed(0))
    tap = RoutingTap(layer=0, slot=0, recompute=True)
    firsts = [torch.tensor([[3, 2], [0, 1]]), torch.tensor([[1, 3], [2, 0]])]
    with torch.no_grad():                                     # first forwards (inside the checkpoint: no grad)
        for t in firsts:
            tap.target, tap.replay, tap.train_pass = t, True, True
            assert tap.get_replay_topk(scores, 2, default_compute_topk=_topk)[1].tolist() == t.tolist()
    tap.target = torch.tensor([[0, 0], [0, 0]])                # whatever is set now does not matter
    for t in firsts:                                          # the recomputes, in the same order, with grad
        assert tap.get_replay_topk(scores, 2, default_compute_topk=_topk)[1].tolist() == t.tolist()


def test_sequence_parallel_slices_and_recording_in_sequence_batch_order():
    b, t, L, k = 2, 3, 2, 1
    routing = torch.arange(b * t * L * k, dtype=torch.int16).view(b, t, L, k)
    B, T = 3, 4                                               # padded input: a 3rd row, a 4th position
    rank1 = _slice(routing, slot=1, B=B, T=T, sp_rank=1, sp_size=2)   # positions 2-3, [s, b] order
    assert rank1[:, 0].tolist() == [routing[0, 2, 1, 0], routing[1, 2, 1, 0], -1, -1, -1, -1]
    taps = [RoutingTap(layer=4, slot=1, recompute=False)]
    set_targets(taps, routing, (B, T), replay=True, measure=False, train_pass=False, sp_rank=1, sp_size=2)
    assert torch.equal(taps[0].target, rank1)
    taps[0].natural = torch.arange(100, 106).view(6, 1)      # what this rank's router chose: (S * B, k)
    out = torch.full((b, t, L, k), -1, dtype=torch.int16)
    record(taps, out, (B, T), sp_rank=1, sp_size=2)
    assert out[:, 2, 1, 0].tolist() == [100, 101]             # position 2 of rows 0 and 1
    assert (out[:, :2] == -1).all() and (out[:, :, 0] == -1).all()


def test_partial_rollout_keeps_the_latest_piece_routing():
    from r1mega.rollout.partial import extend

    s = Sample(prompt_ids=[1, 2], response_ids=[3], group_id=0, rollout_logprobs=[-1.0],
               routed_experts=compact(torch.zeros(3, 1, 1, dtype=torch.long), 8))
    piece = Sample(prompt_ids=[1, 2, 3], response_ids=[4, 5], group_id=0, rollout_logprobs=[-1.0, -1.0],
                   policy_version=1, routed_experts=compact(torch.ones(5, 1, 1, dtype=torch.long), 8))
    out = extend(s, piece)
    assert out.num_tokens == 5 and torch.equal(out.routed_experts, piece.routed_experts)


def test_config_refuses_r2_without_an_old_pass_and_replay_with_context_parallel():
    from r1mega.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="routing_replay=r2.*old_logprobs"):
        load_config(None, ["algorithm.routing_replay=r2"]).validate()
    load_config(None, ["algorithm.routing_replay=r2", "trainer.old_logprobs=recompute"]).validate()
    with pytest.raises(ConfigError, match="parallel.context"):
        load_config(None, ["algorithm.routing_replay=r3", "parallel.context=2"]).validate()
    with pytest.raises(ConfigError, match="routing_replay"):
        load_config(None, ["algorithm.routing_replay=r4"])


def test_config_and_engine_refuse_replay_for_a_dense_model(tmp_path):
    from r1mega.config import ConfigError, load_config
    from r1mega.rollout.engine import _moe_routing
    from tests.hf_models import make_hf_model

    dense, _ = make_hf_model("qwen3", str(tmp_path))
    cfg = load_config(None, [f"model.hf_path={dense}", "algorithm.routing_replay=r3"])
    with pytest.raises(ConfigError, match="needs a mixture-of-experts model.*dense"):
        cfg.validate(world_size=1)
    with pytest.raises(ConfigError, match="return_routed_experts=true needs a mixture-of-experts"):
        load_config(None, [f"model.hf_path={dense}", "rollout.return_routed_experts=true"]).validate(world_size=1)
    with pytest.raises(ConfigError, match="dense model"):
        _moe_routing(dense)
    moe, _ = make_hf_model("qwen3_moe", str(tmp_path))
    assert _moe_routing(moe) == ([0, 1, 3], 8, 2)             # layer 2 is dense (mlp_only_layers)


def test_an_engine_whose_routers_cannot_report_gets_a_clear_error():
    from vllm.model_executor.layers.fused_moe.runner.moe_runner import MoERunner

    from r1mega.config import ConfigError
    from r1mega.rollout.routing_capture import RoutingCapture

    layer = MoERunner.__new__(MoERunner)          # a MoE layer whose router has no capture hook
    torch.nn.Module.__init__(layer)
    layer.layer_name, layer.router = "model.layers.1.mlp.experts", object()
    model = torch.nn.Sequential(layer)
    worker = SimpleNamespace(model_runner=SimpleNamespace(get_model=lambda: model))
    llm = SimpleNamespace(collective_rpc=lambda fn, args=(): [fn(worker, *args)])
    with pytest.raises(ConfigError, match="cannot return the routed experts.*layer 1.*routing_replay=r2"):
        RoutingCapture(llm, [1], num_experts=8, top_k=2)
