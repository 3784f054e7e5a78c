"""Routing replay in the Megatron trainer (R3 and R2), and how often the routers disagree.

* **R3**, rollout routing replay (arXiv:2510.11370): every pass of the step (old-logprob,
  reference, training) routes each token to the experts the rollout engine chose
  (``Sample.routed_experts`` -> ``MicroBatch.routing``), so the trainer's network is the one
  that sampled the tokens.
* **R2**, training routing replay: the old-logprob pass records its own routing and the training
  passes of the step replay it (the reference pass too), so each mini-batch's ratio
  pi_theta / pi_old compares the same experts even after the policy moved. Engine-independent.

Tokens without a recorded routing (rows of -1: the last token, prompt blocks served from vLLM's
prefix cache, padding) are routed by the trainer as usual. The replayed experts only choose
*which* experts run: their weights are the router's probabilities of those experts, as in the
paper, so the router still gets gradients. Megatron's aux-loss-free bias counts the replayed
routing.

Mechanism: Megatron-Core's ``topk_routing_with_score_function`` asks ``router.router_replay``
(normally a ``RouterReplay``, created with ``moe_enable_routing_replay``) for the top-k. We put a
:class:`RoutingTap` there on every router of every model (policy and reference) at build time:
with no target it returns the router's own top-k, with one it returns the target's rows. Targets
are set per micro-batch and chunk, right before the chunk runs (:func:`set_targets`), so every
pipeline schedule works; with activation recomputation the recompute pops the targets its first
forward used. Megatron's class-wide instance list is not used (a reference model would double it).
Fused (TE) routing bypasses the hook: the trainer leaves ``moe_router_fusion`` off.

Megatron's top-k indices are (S * B, k) in [sequence, batch] order, S the rank's sequence slice
under sequence parallelism; expert ids are global (the HF numbering), whatever the expert-parallel
layout, so the engine's ids need no re-indexing between layouts; layers are matched by global
layer index (each pipeline stage takes its own).
"""

from __future__ import annotations

from collections import deque

import torch


def _sets_differ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N,) bool: rows of two (N, k) id tensors hold different expert sets."""
    return (a.sort(1).values != b.sort(1).values).any(1)


class RoutingTap:
    """One router's replay hook and routing-disagreement counter (see the module doc)."""

    def __init__(self, layer: int, slot: int, recompute: bool):
        self.layer, self.slot, self.recompute = layer, slot, recompute
        self.target: torch.Tensor | None = None  # (S * B, k) long, rows of -1: the router's own choice
        self.replay = False                     # route by the target (else only compare with it)
        self.measure = False                    # count disagreements with the target
        self.train_pass = False                 # a training forward (recompute bookkeeping)
        self.natural: torch.Tensor | None = None  # (S * B, k): the router's own top-k, last forward
        self._backward: deque = deque()
        # tokens compared, the router's own choice != target, the routing used != target (on the model's
        # device: no host sync per layer; read by mismatch_stats)
        self.counts = torch.zeros(3, dtype=torch.float64)

    def get_replay_topk(self, scores, topk, num_groups=None, group_topk=None, default_compute_topk=None):
        """Megatron's replay hook: (top-k values, top-k ids) of ``scores`` (N, E)."""
        values, natural = default_compute_topk(scores, topk, num_groups=num_groups, group_topk=group_topk)
        recomputing = self.recompute and torch.is_grad_enabled()  # full recompute: first forward under no_grad
        if recomputing:
            target, replay = self._backward.popleft() if self._backward else (None, False)
        else:
            target, replay = self.target, self.replay
            if self.recompute and self.train_pass:
                self._backward.append((target, replay))
            self.natural = natural.detach()
        if target is None:
            return values, natural
        target = target.to(natural.device)
        have = (target >= 0).all(1)                                   # (N,) rows recorded
        used = torch.where(have[:, None], target, natural) if replay else natural
        if self.measure and not recomputing:
            n = have.sum()
            own = (_sets_differ(natural, target) & have).sum()
            inc = torch.stack([n, own, (_sets_differ(used, target) & have).sum()]).to(torch.float64)
            self.counts = self.counts.to(inc.device) + inc
        if not replay:
            return values, natural
        return scores.gather(1, used), used

    def clear(self) -> None:
        self.target, self.replay, self.measure, self.train_pass, self.natural = None, False, False, False, None


def install_taps(model, moe_layers: list[int], recompute: bool) -> list[RoutingTap]:
    """A :class:`RoutingTap` as ``router_replay`` of every router in ``model`` (idempotent)."""
    from r1mega.models.moe import _routers

    slots = {layer: j for j, layer in enumerate(moe_layers)}
    taps = []
    for layer, router in _routers([model]):
        if not isinstance(router.router_replay, RoutingTap):
            if getattr(router.config, "moe_router_fusion", False):
                raise ValueError("routing replay needs unfused routing (moe_router_fusion=False)")
            router.router_replay = RoutingTap(layer, slots[layer], recompute)
        taps.append(router.router_replay)
    return taps


def taps_of(model) -> list[RoutingTap]:
    from r1mega.models.moe import _routers
    return [r.router_replay for _, r in _routers([model]) if isinstance(r.router_replay, RoutingTap)]


def _slice(routing: torch.Tensor, slot: int, B: int, T: int, sp_rank: int, sp_size: int) -> torch.Tensor:
    """(b, t, L, k) int16 -> this rank's (S * B, k) long target of MoE layer ``slot`` for the chunk's
    (B, T) input (padding rows -1; S = T / sp_size, the rank's sequence slice)."""
    b, t = routing.shape[:2]
    k = routing.shape[-1]
    full = torch.full((T, B, k), -1, dtype=torch.long)
    full[:t, :b] = routing[:, :, slot].transpose(0, 1).long()        # (t, b, k)
    S = T // sp_size
    return full[sp_rank * S:(sp_rank + 1) * S].reshape(-1, k)


def set_targets(taps: list[RoutingTap], routing: torch.Tensor | None, shape: tuple[int, int], *, replay: bool,
                measure: bool, train_pass: bool, sp_rank: int = 0, sp_size: int = 1) -> None:
    """Before a chunk runs a micro-batch of input ``shape`` (B, T): each tap's target from
    ``routing`` (``MicroBatch.routing``; None: the routers route on their own)."""
    B, T = shape
    for tap in taps:
        tap.clear()
        tap.train_pass = train_pass
        if routing is not None:
            tap.target = _slice(routing, tap.slot, B, T, sp_rank, sp_size)
            tap.replay, tap.measure = replay, measure


def record(taps: list[RoutingTap], routing: torch.Tensor, shape: tuple[int, int], sp_rank: int = 0,
           sp_size: int = 1) -> None:
    """After a chunk ran: write each router's own top-k into ``routing`` (b, t, L, k) in place
    (this rank's sequence slice; padding dropped). R2's old-logprob pass."""
    B, T = shape
    b, t = routing.shape[:2]
    S = T // sp_size
    for tap in taps:
        ids = tap.natural.to("cpu").view(S, B, -1)                        # (S, B, k)
        lo, hi = sp_rank * S, min((sp_rank + 1) * S, t)
        if hi > lo:
            routing[:b, lo:hi, tap.slot] = ids[:hi - lo, :b].transpose(0, 1).to(routing.dtype)


def clear(taps: list[RoutingTap]) -> None:
    for tap in taps:
        tap.clear()
        tap._backward.clear()


def mismatch_stats(chunks, moe_layers: list[int], reset: bool = True) -> dict[str, float]:
    """Routing disagreement with the recorded routing (engine's or old pass's) since the last call
    (collective over the world; every rank calls it):

    * ``moe/route_mismatch``: share of recorded tokens whose top-k set the trainer's routers chose
      differs from the recorded one (what replay removes), all MoE layers; per layer as
      ``moe/layer{L}/route_mismatch``. Under replay a layer's own choice is judged on the replayed
      path (the layers below it routed as recorded), so it can differ a little from the same count
      without replay.
    * ``moe/route_mismatch_used``: the same for the routing the trainer computed with (0 under
      replay, the above without).
    Empty when nothing was compared.
    """
    import torch.distributed as dist

    L = len(moe_layers)
    counts = torch.zeros(L, 3, dtype=torch.float64)
    slots = {layer: j for j, layer in enumerate(moe_layers)}
    for c in chunks:
        for tap in taps_of(c):
            counts[slots[tap.layer]] += tap.counts.to("cpu")
            if reset:
                tap.counts = torch.zeros(3, dtype=torch.float64)
    if dist.is_initialized():  # ratios: ranks that see the same tokens (TP without SP) count them alike
        dist.all_reduce(counts)
    if counts[:, 0].sum() == 0:
        return {}
    out = {f"moe/layer{layer}/route_mismatch": float(counts[j, 1] / counts[j, 0].clamp_min(1))
           for j, layer in enumerate(moe_layers) if counts[j, 0] > 0}
    total = counts.sum(0)
    out["moe/route_mismatch"] = float(total[1] / total[0])
    out["moe/route_mismatch_used"] = float(total[2] / total[0])
    return out
