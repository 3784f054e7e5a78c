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
    R = cfg.parallel.rollout_ranks
    on = f" on GPUs 0..{lay.world_size - 1}" if R else ""
    rows = [("trainer", f"TP {lay.tensor} x PP {lay.pipeline}{vp} x CP {lay.context} x DP {lay.data}{on}"
                        f"   sequence parallel: {'on' if lay.sequence_parallel else 'off'}, distributed optimizer: "
                        f"{'on' if cfg.parallel.distributed_optimizer else 'off'}")]
    if s.is_moe:
        edp = lay.world_size // (lay.pipeline * lay.expert * lay.expert_tensor)
        rows.append(("experts", f"EP {lay.expert} x expert-TP {lay.expert_tensor}, expert-DP {edp}; "
                                f"{s.num_experts // lay.expert} of {s.num_experts} experts per GPU per MoE layer"))
    if R:
        t, engines = lay.rollout_tensor, R // lay.rollout_tensor
        crossing = _engines_across_nodes(lay.world_size, engines, t, plan.gpus_per_node)
        span = f" ({crossing} of them span nodes)" if crossing else ""
        rows.append(("rollout", f"{engines} vLLM engine(s) x TP {t}{span} on GPUs {lay.world_size}.."
                                f"{plan.world_size - 1} of their own (rollout.mode=async, max_staleness "
                                f"{cfg.rollout.max_staleness})"))
    else:
        nodes = -(-lay.rollout_tensor // plan.gpus_per_node)
        span = f" ({nodes} nodes each)" if nodes > 1 else ""
        rows.append(("rollout", f"{lay.rollout_data} vLLM engine(s) x TP {lay.rollout_tensor}{span}, colocated"))
    rows.append(("vocab", f"{s.vocab_size} padded to {lay.padded_vocab_size} (multiple of TP)"))
    if lay.pipeline > 1:
        layers = plan.params.layers
        rows.append(("shown", f"pipeline rank {plan.pipeline_rank} (highest peak): layers {layers[0]}..{layers[-1]}"))
    return rows


def _engines_across_nodes(first: int, engines: int, tensor: int, gpus_per_node: int) -> int:
    """How many of the async engines (``tensor`` consecutive GPUs each, from GPU ``first`` on)
    have GPUs on more than one node."""
    return sum((first + e * tensor) // gpus_per_node != (first + (e + 1) * tensor - 1) // gpus_per_node
               for e in range(engines))


def memory_table(items, totals: dict, gpu_bytes: float, phases=PHASES) -> list[str]:
    """Rows of GiB per item and phase, the totals and the GPU."""
    w = max(len(it.label) for it in items) + 2
    head = f"  {'':<{w}}" + "".join(f"{ph:>9}" for ph in phases) + "   note"
    out = [head, "  " + "-" * (len(head) + 30)]
    for it in items:
        vals = "".join(f"{it.bytes(ph) / GiB:>9.1f}" if it.bytes(ph) else f"{'':>9}" for ph in phases)
        out.append(f"  {it.label:<{w}}{vals}   {it.note}")
    out.append("  " + "-" * (len(head) + 30))
    out.append(f"  {'total':<{w}}" + "".join(f"{totals[ph] / GiB:>9.1f}" for ph in phases))
    out.append(f"  {'GPU':<{w}}" + f"{gpu_bytes / GiB:>9.1f}" * len(phases))
    return out


def rollout_gpu_lines(plan: MemoryPlan, cfg) -> list[str]:
    rg, R, t = plan.rollout_gpu, cfg.parallel.rollout_ranks, cfg.parallel.rollout_tensor
    each = "one engine each" if t == 1 else f"one TP-{t} shard of an engine each ({R // t} engine(s))"
    out = ["", f"memory per rollout GPU (GiB): {R} GPU(s), {each}, no trainer state"]
    out += memory_table(rg.items, {"rollout": rg.total}, rg.gpu_bytes, phases=("rollout",))
    out.append(f"  KV cache: {rg.info['kv_bytes_per_token'] / 1024:.1f} KiB per token per GPU -> "
               f"{rg.info['kv_tokens']:,.0f} tokens per engine (rollout.gpu_memory_utilization "
               f"{cfg.rollout.gpu_memory_utilization:g}, as the engine is built; a dedicated GPU allows up to "
               f"{rg.info['max_util']:.2f})")
    return out


def _s(x: float) -> str:
    return "n/a" if x == float("inf") else f"{x:,.1f} s" if x >= 10 else f"{x:.3g} s"


def step_lines(st) -> list[str]:
    """The step-time section (r1mega.plan.steptime.StepTime)."""
    g = st.generate
    waves = (f"{g.per_engine} sequences each, {g.concurrent} at once in {g.waves} wave(s) (KV cache "
             f"{g.kv_tokens:,.0f} tokens)" if g.concurrent else
             f"{g.per_engine} sequences each, but the KV cache ({g.kv_tokens:,.0f} tokens) holds no full-length one")
    rows = [("generate", g.seconds, f"{g.engines} engine(s) x TP {g.tensor}, {waves}: prefill {_s(g.prefill)} + "
                                    f"decode {_s(g.decode)}"),
            ("train", st.train, f"{st.train_gpus} GPU(s), {st.train_flops:.3g} FLOP")]
    rows.append(("transfer" if st.mode == "async" else "sync", st.transfer, st.transfer_note))
    if st.mode == "colocated":
        rows.append(("sleep/wake", st.sleep_wake, "the engine's weights to the host and back (PCIe)"))
    out = ["", "step time (estimate, every sample at its longest)"]
    out += [f"  {k:<11}{_s(v):>10}   {note}" for k, v, note in rows]
    out.append(f"  {'step':<11}{_s(st.total):>10}   {st.formula}")
    if st.mode == "async":
        out.append(f"  colocated sync on the same {st.world} GPUs: {_colocated(st)}")
    out.append(f"  assumed per GPU: {st.hw.describe()} (r1mega/plan/steptime.py; --tflops, --mfu, --hbm-tbps, ...)")
    return out


def _colocated(st) -> str:
    c = st.colocated
    if c is None:
        return st.colocated_note
    g = c.generate
    per_step = _s(c.total).replace(" s", " s/step")
    parts = (f"{per_step} ({g.engines} engine(s) x TP {g.tensor}: generate {_s(g.seconds)} + train {_s(c.train)} + "
             f"sync {_s(c.transfer)} + sleep/wake {_s(c.sleep_wake)})")
    if c.total < float("inf") and st.total < float("inf"):
        ratio = c.total / st.total
        parts += (f": async is {ratio:.2f}x faster" if ratio >= 1 else f": async is {1 / ratio:.2f}x slower")
    return parts + (f" [{st.colocated_note}]" if st.colocated_note else "")


def format_plan(plan: MemoryPlan, cfg, source: str = "") -> str:
    G = plan.gpu_bytes
    nodes = plan.world_size / plan.gpus_per_node
    nodes_s = f"{nodes:g} node(s) x {plan.gpus_per_node}" if nodes >= 1 else f"{plan.world_size} GPU(s)"
    out = [f"r1mega plan{': ' + source if source else ''}",
           f"  world {plan.world_size} GPUs = {nodes_s}, {G / GiB:g} GiB each",
           f"  model {model_line(plan)}", "", "parallel layout"]
    out += [f"  {k:<9}{v}" for k, v in layout_rows(plan, cfg)]
    rg = plan.rollout_gpu
    out += ["", "memory per GPU (GiB)" if rg is None else
            f"memory per trainer GPU (GiB): {plan.layout.world_size} GPU(s), no engine"]
    out += memory_table(plan.items, plan.totals, G)
    i = plan.info
    out.append("")
    out.append(f"  activations: Korthikanti et al. 2022 (arXiv:2205.05198) per-layer bookkeeping; "
               f"no recompute {i['activations_no_recompute'] / GiB:.1f} GiB, full recompute "
               f"{i['activations_recompute'] / GiB:.1f} GiB")
    if rg is None:
        out.append(f"  KV cache: {i['kv_bytes_per_token'] / 1024:.1f} KiB per token per GPU -> "
                   f"{i['kv_tokens']:,.0f} tokens per engine")
    else:
        out += rollout_gpu_lines(plan, cfg)
    if plan.step_time is not None:
        out += step_lines(plan.step_time)
    out += [""] + verdict_lines(plan)
    return "\n".join(out)


def verdict_lines(plan: MemoryPlan) -> list[str]:
    G, rg = plan.gpu_bytes, plan.rollout_gpu
    peak_phase = max(PHASES, key=lambda ph: plan.totals[ph])
    where = f" ({peak_phase} phase)" if rg is None else f" (trainer GPU, {peak_phase} phase; rollout GPU " \
                                                         f"{rg.total / GiB:.1f} GiB)"
    if plan.fits:
        out = [f"verdict: FITS. Peak {plan.peak / GiB:.1f} GiB{where} of {G / GiB:g} GiB, "
               f"{(G - max(plan.peak, rg.total if rg else 0)) / GiB:.1f} GiB headroom."]
    else:
        out = [f"verdict: DOES NOT FIT (peak {plan.peak / GiB:.1f} GiB{where}, GPU {G / GiB:g} GiB)."]
        out += [f"  - {p}" for p in plan.problems]
    if plan.notes:
        out.append("notes:")
        out += [f"  - {n}" for n in plan.notes]
    return out


# info values that are not byte sizes
_COUNTS = ("micro_batches", "kv_tokens", "kv_bytes_per_token", "max_util", "kv_tokens_at_max_util")


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
        "rollout_gpu": None if plan.rollout_gpu is None else _rollout_gpu_dict(plan.rollout_gpu),
        "step_time": None if plan.step_time is None else step_time_dict(plan.step_time),
        "info": _info_dict(plan.info),
    }


def _info_dict(info: dict) -> dict:
    return {(k if k in _COUNTS else f"{k.removesuffix('_bytes')}_gib"): (v if k in _COUNTS else round(v / GiB, 3))
            for k, v in info.items()}


def _rollout_gpu_dict(rg) -> dict:
    return {"items": [{"key": it.key, "label": it.label, "note": it.note, "gib": round(it.bytes("rollout") / GiB, 3)}
                      for it in rg.items],
            "total_gib": round(rg.total / GiB, 3), "problems": rg.problems, "notes": rg.notes,
            "info": _info_dict(rg.info)}


def step_time_dict(st) -> dict:
    """Seconds (null where infinite: no full-length sequence fits the KV cache)."""
    sec = lambda x: None if x == float("inf") else round(x, 4)  # noqa: E731
    g = st.generate
    out = {"mode": st.mode, "formula": st.formula, "total_s": sec(st.total), "generate_s": sec(g.seconds),
           "prefill_s": sec(g.prefill), "decode_s": sec(g.decode), "train_s": sec(st.train),
           ("transfer_s" if st.mode == "async" else "sync_s"): sec(st.transfer), "sleep_wake_s": sec(st.sleep_wake),
           "engines": g.engines, "engine_tensor": g.tensor, "sequences_per_engine": g.per_engine,
           "concurrent_sequences": g.concurrent, "waves": g.waves, "train_gpus": st.train_gpus,
           "train_flops": st.train_flops, "hardware": asdict(st.hw)}
    if st.mode == "async":
        out.update(max_staleness=st.staleness, colocated_note=st.colocated_note,
                   colocated=None if st.colocated is None else step_time_dict(st.colocated))
    return out
