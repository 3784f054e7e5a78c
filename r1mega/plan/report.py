"""The plan as a readable table, or as JSON."""

from __future__ import annotations

from dataclasses import asdict

from r1mega.plan.estimate import PHASES, GiB, MemoryPlan


def _b(n: float) -> str:
    return f"{n / 1e9:.2f}B"


def model_line(plan: MemoryPlan) -> str:
    s, c = plan.spec, plan.counts
    parts = [f"{s.family}: {_b(c.total)} params"]
    if s.is_moe:
        n_moe = sum(s.moe_layers)
        shared = f", shared expert width {s.moe_shared_ffn_hidden_size}" if s.moe_shared_ffn_hidden_size else ""
        parts.append(f" ({_b(c.active)} active per token), {s.num_layers} layers ({n_moe} MoE: {s.num_experts} "
                     f"experts, top-{s.moe_topk}{shared})")
    else:
        parts.append(f", {s.num_layers} layers")
    attn = "MLA" if s.is_mla else f"{s.num_heads} heads / {s.num_kv_heads} KV heads"
    parts.append(f", hidden {s.hidden_size}, {attn}, vocab {s.vocab_size}")
    if not s.trainable:
        parts.append(" (sized only: r1mega cannot build or train this family yet)")
    return "".join(parts)


def layout_rows(plan: MemoryPlan, cfg) -> list[tuple[str, str]]:
    lay, s = plan.layout, plan.spec
    vp = f" (x{lay.virtual_pipeline} virtual)" if lay.virtual_pipeline else ""
    rows = [("trainer", f"TP {lay.tensor} x PP {lay.pipeline}{vp} x CP {lay.context} x DP {lay.data}"
                        f"   sequence parallel: {'on' if lay.sequence_parallel else 'off'}, distributed optimizer: "
                        f"{'on' if cfg.parallel.distributed_optimizer else 'off'}")]
    if s.is_moe:
        edp = lay.world_size // (lay.pipeline * lay.expert * lay.expert_tensor)
        rows.append(("experts", f"EP {lay.expert} x expert-TP {lay.expert_tensor}, expert-DP {edp}; "
                                f"{s.num_experts // lay.expert} of {s.num_experts} experts per GPU per MoE layer"))
    nodes = -(-lay.rollout_tensor // plan.gpus_per_node)
    span = f" ({nodes} nodes each)" if nodes > 1 else ""
    rows.append(("rollout", f"{lay.rollout_data} vLLM engine(s) x TP {lay.rollout_tensor}{span}"))
    rows.append(("vocab", f"{s.vocab_size} padded to {lay.padded_vocab_size} (multiple of TP)"))
    if lay.pipeline > 1:
        layers = plan.params.layers
        rows.append(("shown", f"pipeline rank {plan.pipeline_rank} (highest peak): layers {layers[0]}..{layers[-1]}"))
    return rows


def format_plan(plan: MemoryPlan, cfg, source: str = "") -> str:
    G = plan.gpu_bytes
    nodes = plan.world_size / plan.gpus_per_node
    nodes_s = f"{nodes:g} node(s) x {plan.gpus_per_node}" if nodes >= 1 else f"{plan.world_size} GPU(s)"
    out = [f"r1mega plan{': ' + source if source else ''}",
           f"  world {plan.world_size} GPUs = {nodes_s}, {G / GiB:g} GiB each",
           f"  model {model_line(plan)}", "", "parallel layout"]
    out += [f"  {k:<9}{v}" for k, v in layout_rows(plan, cfg)]
    out += ["", "memory per GPU (GiB)"]
    w = max(len(it.label) for it in plan.items) + 2
    head = f"  {'':<{w}}" + "".join(f"{ph:>9}" for ph in PHASES) + "   note"
    out += [head, "  " + "-" * (len(head) + 30)]
    for it in plan.items:
        vals = "".join(f"{it.bytes(ph) / GiB:>9.1f}" if it.bytes(ph) else f"{'':>9}" for ph in PHASES)
        out.append(f"  {it.label:<{w}}{vals}   {it.note}")
    out.append("  " + "-" * (len(head) + 30))
    out.append(f"  {'total':<{w}}" + "".join(f"{plan.totals[ph] / GiB:>9.1f}" for ph in PHASES))
    out.append(f"  {'GPU':<{w}}" + f"{G / GiB:>9.1f}" * len(PHASES))
    i = plan.info
    out.append("")
    out.append(f"  activations: Korthikanti et al. 2022 (arXiv:2205.05198) per-layer bookkeeping; "
               f"no recompute {i['activations_no_recompute'] / GiB:.1f} GiB, full recompute "
               f"{i['activations_recompute'] / GiB:.1f} GiB")
    out.append(f"  KV cache: {i['kv_bytes_per_token'] / 1024:.1f} KiB per token per GPU -> "
               f"{i['kv_tokens']:,.0f} tokens per engine")
    peak_phase = max(PHASES, key=lambda ph: plan.totals[ph])
    out.append("")
    if plan.fits:
        out.append(f"verdict: FITS. Peak {plan.peak / GiB:.1f} GiB ({peak_phase} phase) of {G / GiB:g} GiB, "
                   f"{(G - plan.peak) / GiB:.1f} GiB headroom.")
    else:
        out.append(f"verdict: DOES NOT FIT (peak {plan.peak / GiB:.1f} GiB in the {peak_phase} phase, "
                   f"GPU {G / GiB:g} GiB).")
        out += [f"  - {p}" for p in plan.problems]
    if plan.notes:
        out.append("notes:")
        out += [f"  - {n}" for n in plan.notes]
    return "\n".join(out)


_COUNTS = ("micro_batches", "kv_tokens", "kv_bytes_per_token")  # info values that are not byte sizes


def plan_to_dict(plan: MemoryPlan, cfg) -> dict:
    gib = lambda x: round(x / GiB, 3)  # noqa: E731
    return {
        "world_size": plan.world_size, "gpus_per_node": plan.gpus_per_node, "gpu_gib": gib(plan.gpu_bytes),
        "model": {"family": plan.spec.family, "params": plan.counts.total, "active_params": plan.counts.active,
                  "layers": plan.spec.num_layers, "moe_layers": sum(plan.spec.moe_layers)},
        "layout": asdict(plan.layout), "pipeline_rank": plan.pipeline_rank,
        "params_on_gpu": plan.params.total, "expert_params_on_gpu": plan.params.experts,
        "items": [{"key": it.key, "label": it.label, "note": it.note,
                   **{f"{ph}_gib": gib(it.bytes(ph)) for ph in PHASES}} for it in plan.items],
        "totals_gib": {ph: gib(v) for ph, v in plan.totals.items()},
        "by_pipeline_rank_gib": [{ph: gib(v) for ph, v in t.items()} for t in plan.by_rank],
        "peak_gib": gib(plan.peak), "fits": plan.fits, "problems": plan.problems, "notes": plan.notes,
        "info": {(k if k in _COUNTS else f"{k.removesuffix('_bytes')}_gib"): (v if k in _COUNTS else gib(v)) for k, v in plan.info.items()},
    }
