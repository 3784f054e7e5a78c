"""Mixture-of-experts policies: HF MoE configs -> Megatron-Core's MoE layer, and router statistics.

Two jobs, each a small function (the MoE and MLA keys of an HF ``config.json`` are read, and
options Megatron cannot reproduce refused, by :func:`r1mega.models.arch.read_moe_fields` /
:func:`~r1mega.models.arch.read_mla_fields`; the MoE constraints of a parallel layout are
checked by :func:`r1mega.parallel.layout.check_layout`):

* :func:`megatron_moe_kwargs` gives the ``TransformerConfig`` keywords for that architecture
  on a layout: routing, shared expert, dispatcher, expert parallel sizes.
* :func:`install_router_stats` / :func:`moe_router_stats`: per-step, per-layer router health
  (the load-balancing loss Megatron tracks, the share of routed tokens each expert got, the
  load imbalance, and how far DeepSeek-V3's aux-loss-free balancing bias has drifted).

Routing, HF -> Megatron (s = router logits of one token, E experts, k = top-k):

* Qwen softmax routing: p = softmax(s); pick the k largest; with ``norm_topk_prob`` the
  weights are p_i / sum_topk p_j = softmax over the k chosen logits, which is Megatron's
  ``moe_router_pre_softmax=False`` (top-k of logits, then softmax); without it the weights
  are the raw p_i: Megatron's ``moe_router_pre_softmax=True``.
* Qwen2-MoE's shared expert: y = MoE(x) + sigmoid(x . w_g) * MLP_shared(x), Megatron's
  ``moe_shared_expert_gate=True`` (``gate_weight`` (1, H) = HF ``shared_expert_gate.weight``).
* DeepSeek-V3 sigmoid routing (arXiv:2412.19437): s = sigmoid(logits); the experts are chosen
  on s + b (b = ``e_score_correction_bias``, the aux-loss-free balancing bias: Megatron's
  ``expert_bias``, nudged after each step by +-``moe_router_bias_update_rate`` towards
  balance), only inside the ``topk_group`` of ``n_group`` expert groups with the largest sum
  of their top-2 biased scores; weights = s_i / sum_topk s_j * ``routed_scaling_factor``.
  Megatron's group score sums the top ``topk / topk_group`` scores per group, so
  ``num_experts_per_tok / topk_group`` must be 2 (true of DeepSeek-V3: 8 / 4).
* Load balancing (Switch Transformer, arXiv:2101.03961): aux = E * sum_i f_i * P_i with f_i
  the fraction of routed (token, slot) pairs sent to expert i and P_i the mean router
  probability of expert i; the coefficient is HF's ``router_aux_loss_coef``. Megatron adds it
  per MoE layer and micro-batch (``moe_router_load_balancing_type="aux_loss"``).

Tokens are never dropped: Megatron's capacity factor stays off (dropless MoE), as in the HF
models, so the trainer and the rollout engine route every token to exactly its top-k experts.
"""

from __future__ import annotations


def megatron_moe_kwargs(arch, layout, use_te: bool) -> dict:
    """``TransformerConfig`` keywords for the MoE part of ``arch`` on ``layout``."""
    if not arch.is_moe:
        return {}
    sigmoid = arch.moe_score == "sigmoid"
    return dict(
        num_moe_experts=arch.num_experts,
        moe_router_topk=arch.moe_topk,
        moe_ffn_hidden_size=arch.moe_ffn_hidden_size,
        moe_shared_expert_intermediate_size=arch.moe_shared_ffn_hidden_size or None,
        moe_shared_expert_gate=arch.moe_shared_gate,
        moe_router_score_function=arch.moe_score,
        moe_router_pre_softmax=not arch.moe_norm_topk and not sigmoid,
        moe_router_enable_expert_bias=arch.moe_expert_bias,
        moe_router_num_groups=arch.moe_num_groups or None,
        moe_router_group_topk=arch.moe_group_topk or None,
        moe_router_topk_scaling_factor=arch.moe_scaling if arch.moe_scaling != 1.0 else None,
        moe_router_dtype="fp32",          # routing decisions in fp32 whatever the compute dtype
        moe_router_load_balancing_type="aux_loss" if arch.moe_aux_loss_coef > 0 else "none",
        moe_aux_loss_coeff=arch.moe_aux_loss_coef,
        moe_expert_capacity_factor=None,  # dropless
        moe_token_dispatcher_type="alltoall",
        moe_grouped_gemm=use_te,          # TEGroupedMLP on GPUs with TE; SequentialMLP elsewhere
        moe_layer_freq=list(arch.moe_layers),
        expert_tensor_parallel_size=layout.expert_tensor,
    )


# --------------------------------------------------------------------------- router statistics
def _routers(chunks):
    """(global layer index, router module) for every MoE layer of this rank's chunks."""
    out = []
    for chunk in chunks:
        m = chunk
        while hasattr(m, "module"):
            m = m.module
        decoder = getattr(m, "decoder", None)
        for layer in getattr(decoder, "layers", []):
            router = getattr(getattr(layer, "mlp", None), "router", None)
            if router is not None:
                out.append((layer.layer_number - 1, router))
    return out


def install_router_stats(model) -> None:
    """Count, per router, the (token, expert) assignments of training forward passes.

    A forward hook adds ``routing_map.sum(0)`` (tokens sent to each expert) and the number of
    forward calls; only passes that build a graph count (training, not logprob passes). A router
    with an aux-loss-free expert bias also keeps b_0, the bias at its first training forward
    pass: after any checkpoint load (which comes after this install), before the first update
    (Megatron moves the bias in ``finalize_model_grads``, at the end of each step), so
    :func:`moe_router_stats`' drift covers every update this process made.
    """
    import torch

    for _, router in _routers([model]):
        if getattr(router, "_r1mega_stats", None) is not None:
            continue
        router._r1mega_stats = {"load": torch.zeros(router.config.num_moe_experts, dtype=torch.float64), "calls": 0,
                                "bias0": None, "bias_prev": None}

        def hook(module, inputs, output):
            if module.training and torch.is_grad_enabled():
                _, routing_map = output                      # (tokens, E) bool
                st = module._r1mega_stats
                st["load"] += routing_map.sum(0).to("cpu", torch.float64)
                st["calls"] += 1
                if st["bias0"] is None:
                    st["bias0"] = _bias(module)              # None without an expert bias

        router.register_forward_hook(hook)


def _bias(router):
    """The router's aux-loss-free expert bias b (E,) as a float64 CPU copy; None without one."""
    import torch

    b = getattr(router, "expert_bias", None)
    return None if b is None else b.detach().to("cpu", torch.float64).clone()


def _bias_moves(routers, num_layers: int):
    """(3, L) float64 of this rank's routers: per layer, mean_e |b - b_0|, mean_e |b - b_prev|
    and 1 where this rank holds that layer's router with an expert bias (0 elsewhere).

    b is read now (Megatron updated it at the end of the last step), b_0 is the bias of the
    first training pass (taken now if no pass ran yet), b_prev the bias of the previous call
    (b_0 at the first call, so the first step's update counts); b_prev becomes b.
    """
    import torch

    out = torch.zeros(3, num_layers, dtype=torch.float64)
    for layer, r in routers:
        b = _bias(r)
        if b is None:
            continue
        st = r._r1mega_stats
        if st["bias0"] is None:
            st["bias0"] = b.clone()
        prev = st["bias_prev"] if st["bias_prev"] is not None else st["bias0"]
        out[0, layer] += (b - st["bias0"]).abs().mean()
        out[1, layer] += (b - prev).abs().mean()
        out[2, layer] += 1.0
        st["bias_prev"] = b
    return out


def moe_router_stats(chunks, reset: bool = True) -> dict[str, float]:
    """Router health of the training passes since the last call (collective).

    Every rank must call it (it all-reduces over the world); every rank gets the same values.
    Returns, for the MoE layers of the whole model (all pipeline stages), L = global layer index,
    load_i = (token, slot) pairs routed to expert i, share_i = load_i / sum_j load_j:

    * ``moe/layer{L}/max_load`` / ``moe/layer{L}/min_load``: max_i / min_i share_i of layer L
      (1/E each when balanced); ``moe/max_load`` / ``moe/min_load``: the worst layer's.
    * ``moe/layer{L}/imbalance``: max_i load_i / mean_i load_i = E * max_i share_i (1.0 =
      balanced, E = every pair on one expert); ``moe/imbalance``: the max over layers.
    * ``moe/tokens_dropped``: always 0 (dropless routing; reported so dashboards can check).
    * ``moe/load_balancing_loss``: Switch aux loss E * sum_i f_i P_i (without the coefficient;
      1.0 = perfectly balanced), mean over micro-batches and MoE layers; present when
      the model trains with an aux loss (``router_aux_loss_coef`` > 0).
    * Routers with an aux-loss-free expert bias b (DeepSeek-V3: ``moe_router_enable_expert_bias``,
      which Megatron moves by +-``moe_router_bias_update_rate`` per expert after each step) only:
      ``moe/layer{L}/bias_drift`` = mean_e |b_e - b0_e|, the drift since the first step of this
      process (b0: the bias at this process's first training pass, after any checkpoint load);
      ``moe/layer{L}/bias_step`` = mean_e |b_e - bprev_e|, the move since the previous call (the
      first call: since b0, i.e. the first step's update); ``moe/bias_drift`` / ``moe/bias_step``:
      the max over layers. A router is replicated over data / tensor / expert parallel ranks:
      the copies are averaged.

    With ``reset`` the counters (ours and Megatron's aux-loss tracker) restart at zero.

    In the trainer: call it on every rank after each ``Policy.train_step`` (it only counts
    training passes, so logprob passes in between do not matter) and log the dict.
    """
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.transformer.moe.moe_utils import get_moe_layer_wise_logging_tracker

    routers = _routers(chunks)
    arch = None
    for c in chunks:
        m = c
        while hasattr(m, "module"):
            m = m.module
        arch = getattr(m, "r1mega_arch", arch)
    if arch is None or not arch.is_moe:
        return {}
    L, E = arch.num_layers, arch.num_experts
    load = torch.zeros(L, E, dtype=torch.float64)
    calls = torch.zeros(L, dtype=torch.float64)
    for layer, r in routers:
        st = getattr(r, "_r1mega_stats", None)
        if st is None:
            raise RuntimeError("moe_router_stats needs install_router_stats(model) at build time "
                               "(r1mega.models.build does it)")
        load[layer] += st["load"]
        calls[layer] += st["calls"]
    tracker = get_moe_layer_wise_logging_tracker()
    aux = torch.zeros(L, dtype=torch.float64)
    if arch.moe_aux_loss_coef > 0 and "load_balancing_loss" in tracker:
        aux += tracker["load_balancing_loss"]["values"].to(torch.float64)
    vec = torch.cat([load.flatten(), calls, aux, _bias_moves(routers, L).flatten()])
    if dist.is_initialized():
        dist.all_reduce(vec)
    load, calls, aux = vec[:L * E].view(L, E), vec[L * E:L * E + L], vec[L * E + L:L * E + 2 * L]
    drift, moved, holders = vec[L * E + 2 * L:].view(3, L)
    # Each micro-batch's routers run on every rank of its TP x CP group; Megatron's aux loss on
    # one rank is that rank's part of the micro-batch loss (parts sum to the loss).
    tp_cp = ps.get_tensor_model_parallel_world_size() * ps.get_context_parallel_world_size()
    out: dict[str, float] = {}
    moe_layers = [i for i in range(L) if arch.moe_layers[i] and calls[i] > 0]
    if moe_layers:
        maxes, mins, imb = [], [], []
        for i in moe_layers:
            share = load[i] / load[i].sum().clamp_min(1.0)
            out[f"moe/layer{i}/max_load"] = float(share.max())
            out[f"moe/layer{i}/min_load"] = float(share.min())
            out[f"moe/layer{i}/imbalance"] = float(share.max() * E)
            maxes.append(float(share.max()))
            mins.append(float(share.min()))
            imb.append(float(share.max() * E))
        out.update({"moe/max_load": max(maxes), "moe/min_load": min(mins), "moe/imbalance": max(imb),
                    "moe/tokens_dropped": 0.0})
        if arch.moe_aux_loss_coef > 0:
            per_layer = [float(aux[i] * tp_cp / calls[i]) for i in moe_layers]
            out["moe/load_balancing_loss"] = sum(per_layer) / len(per_layer)
    out.update(_bias_stats(drift, moved, holders))
    if reset:
        for _, r in routers:
            r._r1mega_stats["load"].zero_()
            r._r1mega_stats["calls"] = 0
        # Megatron's tracker is process-global and sized by the first model that wrote to it:
        # drop its entries (recreated, zeroed and sized, by the next training pass)
        get_moe_layer_wise_logging_tracker().clear()
    return out


def _bias_stats(drift, moved, holders) -> dict[str, float]:
    """The bias keys of :func:`moe_router_stats` from the world sums of :func:`_bias_moves`:
    per layer sum / holders (replicated routers average), summaries the max over layers; none
    when no rank holds a router with an expert bias."""
    layers = [i for i in range(len(holders)) if holders[i] > 0]
    if not layers:
        return {}
    out: dict[str, float] = {}
    for i in layers:
        out[f"moe/layer{i}/bias_drift"] = float(drift[i] / holders[i])
        out[f"moe/layer{i}/bias_step"] = float(moved[i] / holders[i])
    out["moe/bias_drift"] = max(out[f"moe/layer{i}/bias_drift"] for i in layers)
    out["moe/bias_step"] = max(out[f"moe/layer{i}/bias_step"] for i in layers)
    return out
