"""Mixture-of-experts policies: HF MoE configs -> Megatron-Core's MoE layer, and router statistics.

Three jobs, each a small function:

* :func:`read_moe_fields` / :func:`read_mla_fields` turn the MoE (Qwen2-MoE, Qwen3-MoE,
  DeepSeek-V3) and multi-head latent attention keys of an HF ``config.json`` into
  :class:`~r1mega.models.arch.ModelArch` fields, refusing options Megatron cannot reproduce
  with a message naming the key and its value (pure Python: no torch here).
* :func:`megatron_moe_kwargs` gives the ``TransformerConfig`` keywords for that architecture
  on a layout: routing, shared expert, dispatcher, expert parallel sizes.
* :func:`install_router_stats` / :func:`moe_router_stats`: per-step load-balancing statistics
  (the load-balancing loss Megatron tracks, and the share of routed tokens each expert got).

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

from r1mega.config.base import ConfigError


def _get(cfg: dict, where: str, *keys, default=None, required: bool = False):
    for k in keys:
        if cfg.get(k) is not None:
            return cfg[k]
    if required:
        raise ConfigError(f"{where}: missing key {keys[0]!r} in the MoE model config")
    return default


def moe_layer_pattern(cfg: dict, num_layers: int, num_experts: int, where: str) -> list[int]:
    """Per layer, 1 = sparse MoE block, 0 = dense MLP: HF Qwen-MoE's rule, layer i is sparse iff
    ``i not in mlp_only_layers and num_experts > 0 and (i + 1) % decoder_sparse_step == 0``."""
    step = int(cfg.get("decoder_sparse_step", 1) or 1)
    if step < 1:
        raise ConfigError(f"{where}: decoder_sparse_step ({step}) must be >= 1")
    only = cfg.get("mlp_only_layers") or []
    bad = [i for i in only if not (isinstance(i, int) and 0 <= i < num_layers)]
    if bad:
        raise ConfigError(f"{where}: mlp_only_layers {only} holds {bad}, not layer indices in [0, {num_layers})")
    return [int(i not in only and num_experts > 0 and (i + 1) % step == 0) for i in range(num_layers)]


def read_moe_fields(cfg: dict, family: str, where: str) -> dict:
    """The MoE fields of :class:`ModelArch` from a Qwen2-MoE / Qwen3-MoE / DeepSeek-V3 config.

    A Qwen config whose pattern has no sparse layer (``num_experts`` 0, or every layer in
    ``mlp_only_layers``) is a dense model: it returns ``num_experts=0``.
    """
    if family == "deepseek_v3":
        return _deepseek_v3_moe(cfg, where)
    num_layers = int(_get(cfg, where, "num_hidden_layers", required=True))
    experts = int(_get(cfg, where, "num_experts", "num_local_experts", default=0))
    pattern = moe_layer_pattern(cfg, num_layers, experts, where)
    if experts == 0 or not any(pattern):
        return {}
    if cfg.get("use_sliding_window"):
        raise ConfigError(f"{where}: use_sliding_window=true is not supported (full causal attention only)")
    topk = int(_get(cfg, where, "num_experts_per_tok", required=True))
    if not 1 <= topk <= experts:
        raise ConfigError(f"{where}: num_experts_per_tok ({topk}) must be in [1, num_experts ({experts})]")
    norm_topk = bool(cfg.get("norm_topk_prob", False))
    if topk == 1 and norm_topk:
        raise ConfigError(f"{where}: num_experts_per_tok=1 with norm_topk_prob=true (every routing weight 1.0) "
                          f"is not supported: Megatron's top-1 softmax router needs the unnormalised probability")
    moe_ffn = int(_get(cfg, where, "moe_intermediate_size", required=True))
    shared, gate = 0, False
    if family == "qwen2_moe":
        shared = int(_get(cfg, where, "shared_expert_intermediate_size", required=True))
        if shared <= 0:
            raise ConfigError(f"{where}: shared_expert_intermediate_size ({shared}) must be > 0: Qwen2-MoE always "
                              f"has a gated shared expert")
        gate = True
    return dict(num_experts=experts, moe_topk=topk, moe_ffn_hidden_size=moe_ffn, moe_shared_ffn_hidden_size=shared,
                moe_shared_gate=gate, moe_score="softmax", moe_norm_topk=norm_topk,
                moe_aux_loss_coef=float(cfg.get("router_aux_loss_coef", 0.0) or 0.0), moe_layers=pattern)


def _deepseek_v3_moe(cfg: dict, where: str) -> dict:
    num_layers = int(_get(cfg, where, "num_hidden_layers", required=True))
    experts = int(_get(cfg, where, "n_routed_experts", "num_local_experts", required=True))
    topk = int(_get(cfg, where, "num_experts_per_tok", required=True))
    if not 1 <= topk <= experts:
        raise ConfigError(f"{where}: num_experts_per_tok ({topk}) must be in [1, n_routed_experts ({experts})]")
    for key, want in (("topk_method", "noaux_tc"), ("scoring_func", "sigmoid")):
        if cfg.get(key, want) != want:
            raise ConfigError(f"{where}: {key}={cfg[key]!r} is not supported (DeepSeek-V3 routing: {key}={want!r})")
    if cfg.get("moe_layer_freq", 1) not in (None, 1):
        raise ConfigError(f"{where}: moe_layer_freq={cfg['moe_layer_freq']!r} is not supported (only 1: every "
                          f"layer from first_k_dense_replace on is MoE, as in transformers)")
    if not cfg.get("norm_topk_prob", True) and topk > 1:
        raise ConfigError(f"{where}: norm_topk_prob=false is not supported with sigmoid routing (Megatron always "
                          f"renormalises the top-k sigmoid scores)")
    groups, group_topk = int(cfg.get("n_group") or 1), int(cfg.get("topk_group") or 1)
    if groups > 1:
        if experts % groups:
            raise ConfigError(f"{where}: n_routed_experts ({experts}) must be a multiple of n_group ({groups})")
        if not 1 <= group_topk <= groups or topk != 2 * group_topk:
            raise ConfigError(f"{where}: num_experts_per_tok ({topk}) must be 2 x topk_group ({group_topk}), with "
                              f"topk_group <= n_group ({groups}): HF scores a group by its top-2 experts, Megatron "
                              f"by its top (num_experts_per_tok / topk_group)")
    dense = int(cfg.get("first_k_dense_replace") or 0)
    pattern = [int(i >= dense) for i in range(num_layers)]
    if not any(pattern):
        raise ConfigError(f"{where}: first_k_dense_replace ({dense}) >= num_hidden_layers ({num_layers}): no MoE layer")
    moe_ffn = int(_get(cfg, where, "moe_intermediate_size", required=True))
    return dict(num_experts=experts, moe_topk=topk, moe_ffn_hidden_size=moe_ffn,
                moe_shared_ffn_hidden_size=int(cfg.get("n_shared_experts") or 0) * moe_ffn, moe_shared_gate=False,
                moe_score="sigmoid", moe_norm_topk=topk > 1, moe_aux_loss_coef=0.0, moe_layers=pattern,
                moe_expert_bias=True, moe_num_groups=groups if groups > 1 else 0,
                moe_group_topk=group_topk if groups > 1 else 0,
                moe_scaling=float(cfg.get("routed_scaling_factor") or 1.0))


def read_mla_fields(cfg: dict, where: str, rope: dict | None = None) -> dict:
    """Multi-head latent attention fields (DeepSeek-V2/V3, arXiv:2405.04434): queries
    h -> q_lora_rank (RMSNorm) -> heads x (nope + rope), keys/values h -> kv_lora_rank (RMSNorm)
    + one shared rope key -> heads x (nope + v); RoPE on the interleaved rope part.

    ``rope``: the config's RoPE parameters; YaRN (arXiv:2309.00071, DeepSeek-V3's long-context
    RoPE) is read into ``rope_yarn``: inverse frequencies blended between f and f / factor over
    the dims whose rotation counts lie between beta_slow and beta_fast at the original context,
    cos/sin scaled by m(factor, mscale) / m(factor, mscale_all_dim) and the softmax scale by
    m(factor, mscale_all_dim)^2, m(s, a) = 0.1 a ln s + 1 (1 for s <= 1), as transformers does.
    """
    if cfg.get("attention_bias"):
        raise ConfigError(f"{where}: attention_bias=true is not supported with multi-head latent attention")
    if cfg.get("rope_interleave", True) is not True:
        raise ConfigError(f"{where}: rope_interleave={cfg['rope_interleave']!r} is not supported (Megatron's MLA "
                          f"applies RoPE to the interleaved layout, DeepSeek's checkpoint layout)")
    out = dict(q_lora_rank=int(cfg.get("q_lora_rank") or 0),
               kv_lora_rank=int(_get(cfg, where, "kv_lora_rank", required=True)))
    for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        out[k] = int(_get(cfg, where, k, required=True))
    if out["qk_rope_head_dim"] % 2:
        raise ConfigError(f"{where}: qk_rope_head_dim ({out['qk_rope_head_dim']}) must be even")
    rope = rope or {}
    if rope.get("rope_type", rope.get("type")) == "yarn":
        for key in ("attention_factor", "partial_rotary_factor"):
            if rope.get(key) is not None:
                raise ConfigError(f"{where}: YaRN {key}={rope[key]!r} is not supported (only the mscale / "
                                  f"mscale_all_dim form DeepSeek-V3 uses)")
        if rope.get("truncate", True) is not True:
            raise ConfigError(f"{where}: YaRN truncate={rope['truncate']!r} is not supported (Megatron rounds the "
                              f"correction range to integers)")
        orig = rope.get("original_max_position_embeddings")
        factor = rope.get("factor")
        if orig is None:
            raise ConfigError(f"{where}: YaRN RoPE needs original_max_position_embeddings")
        if factor is None:  # transformers' rule for DeepSeek-style configs
            factor = _get(cfg, where, "max_position_embeddings", required=True) / orig
        mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")
        if not (mscale and mscale_all):  # transformers then uses m(factor, 1) for the cos/sin scale
            mscale, mscale_all = 1.0, 0.0
        out["rope_yarn"] = dict(factor=float(factor), original_max_position_embeddings=int(orig),
                                beta_fast=float(rope.get("beta_fast") or 32), beta_slow=float(rope.get("beta_slow") or 1),
                                mscale=float(mscale), mscale_all_dim=float(mscale_all))
    return out


def check_moe_layout(arch, p, etp: int) -> None:
    """MoE constraints of a parallel layout (``p``: ParallelConfig; ``etp``: expert TP size)."""
    if arch.moe_ffn_hidden_size % etp:
        raise ConfigError(f"moe_intermediate_size ({arch.moe_ffn_hidden_size}) must be a multiple of the expert "
                          f"tensor-parallel size ({etp})")
    if arch.moe_shared_ffn_hidden_size % p.tensor:
        raise ConfigError(f"the shared expert's intermediate size ({arch.moe_shared_ffn_hidden_size}) must be a "
                          f"multiple of parallel.tensor ({p.tensor})")
    if p.tensor > 1 and not p.sequence_parallel:
        # Megatron's MoELayer.forward raises in training mode ("performance may degrade if MoE
        # and tensor parallelism are enabled without also enabling sequence parallelism"):
        # without SP every TP rank would route and dispatch the same tokens.
        raise ConfigError(f"an MoE model with parallel.tensor ({p.tensor}) > 1 needs parallel.sequence_parallel="
                          f"true (Megatron's MoE layer refuses to train TP without SP: every TP rank would "
                          f"dispatch the same tokens)")


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
    forward calls; only passes that build a graph count (training, not logprob passes).
    """
    import torch

    for _, router in _routers([model]):
        if getattr(router, "_r1mega_stats", None) is not None:
            continue
        router._r1mega_stats = {"load": torch.zeros(router.config.num_moe_experts, dtype=torch.float64), "calls": 0}

        def hook(module, inputs, output):
            if module.training and torch.is_grad_enabled():
                _, routing_map = output                      # (tokens, E) bool
                module._r1mega_stats["load"] += routing_map.sum(0).to("cpu", torch.float64)
                module._r1mega_stats["calls"] += 1

        router.register_forward_hook(hook)


def moe_router_stats(chunks, reset: bool = True) -> dict[str, float]:
    """Load-balancing statistics of the training passes since the last call (collective).

    Every rank must call it (it all-reduces over the world). Returns, for the MoE layers of
    the whole model (all pipeline stages):

    * ``moe/load_balancing_loss``: Switch aux loss E * sum_i f_i P_i (without the coefficient;
      1.0 = perfectly balanced), mean over micro-batches and MoE layers; present when
      the model trains with an aux loss (``router_aux_loss_coef`` > 0).
    * ``moe/max_load`` / ``moe/min_load``: the largest / smallest share of routed (token, slot)
      pairs any expert received, worst layer (1/E each when balanced); per layer as
      ``moe/layer{L}/max_load`` and ``moe/layer{L}/min_load`` (L = global layer index).
    * ``moe/imbalance``: max over layers of max_i(load_i) / mean_i(load_i) (1.0 = balanced).
    * ``moe/tokens_dropped``: always 0 (dropless routing; reported so dashboards can check).

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
    vec = torch.cat([load.flatten(), calls, aux])
    if dist.is_initialized():
        dist.all_reduce(vec)
    load, calls, aux = vec[:L * E].view(L, E), vec[L * E:L * E + L], vec[L * E + L:]
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
            maxes.append(float(share.max()))
            mins.append(float(share.min()))
            imb.append(float(share.max() * E))
        out.update({"moe/max_load": max(maxes), "moe/min_load": min(mins), "moe/imbalance": max(imb),
                    "moe/tokens_dropped": 0.0})
        if arch.moe_aux_loss_coef > 0:
            per_layer = [float(aux[i] * tp_cp / calls[i]) for i in moe_layers]
            out["moe/load_balancing_loss"] = sum(per_layer) / len(per_layer)
    if reset:
        for _, r in routers:
            r._r1mega_stats["load"].zero_()
            r._r1mega_stats["calls"] = 0
        # Megatron's tracker is process-global and sized by the first model that wrote to it:
        # drop its entries (recreated, zeroed and sized, by the next training pass)
        get_moe_layer_wise_logging_tracker().clear()
    return out
