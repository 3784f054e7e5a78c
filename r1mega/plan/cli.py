"""``r1mega plan CONFIG [key=value ...]``: check the parallel layout, print the per-GPU memory and step time.

    r1mega plan examples/deepseek_v3_moe.yaml --nodes 32 --gpus-per-node 8 --gpu-mem-gb 139.8 \
        --hf-config examples/configs/deepseek_v3.json

No GPU, torch or model weights needed: the model comes from its ``config.json``
(``model.hf_path`` or ``--hf-config``). With ``rollout.mode=async parallel.rollout_ranks=R`` the
last R GPUs only generate (R / ``parallel.rollout_tensor`` engines of that many consecutive GPUs
each): the trainer's layout is over the other world - R, both kinds of GPU are planned, and the
step time is shown beside the colocated layout's on the same GPUs. Exit
status 0 whether or not the plan fits (the verdict says); a broken layout is a config error
(exit 2 through ``r1mega.cli.main``).
"""

from __future__ import annotations

import dataclasses
import json
import os

from r1mega.config.base import ConfigError


def resolve_world_size(world_size: int | None, nodes: int | None, gpus_per_node: int) -> int:
    if gpus_per_node < 1:
        raise ConfigError(f"--gpus-per-node ({gpus_per_node}) must be >= 1")
    if world_size is not None and nodes is not None and world_size != nodes * gpus_per_node:
        raise ConfigError(f"--world-size ({world_size}) disagrees with --nodes x --gpus-per-node "
                          f"({nodes} x {gpus_per_node} = {nodes * gpus_per_node})")
    if world_size is None:
        world_size = (nodes or 1) * gpus_per_node
    if world_size < 1:
        raise ConfigError(f"--world-size ({world_size}) must be >= 1")
    return world_size


def model_spec_for(cfg, hf_config: str | None):
    """The :class:`~r1mega.models.arch.ModelArch` from ``--hf-config`` or ``model.hf_path``
    (the model builder's reader: the plan sizes exactly the model r1mega would build)."""
    from r1mega.models.arch import read_hf_config

    path = hf_config or cfg.model.hf_path
    if not path:
        raise ConfigError("r1mega plan needs the model's config.json: set model.hf_path or pass --hf-config FILE")
    if not hf_config and not os.path.exists(os.path.join(path, "config.json")) and not os.path.isfile(path):
        raise ConfigError(f"model.hf_path {path!r} has no config.json here; pass --hf-config FILE "
                          f"(e.g. a copy of the model's config.json)")
    return read_hf_config(path)


def validate_layout(cfg, spec, world_size: int):
    """r1mega.parallel.layout.check_layout (sizes against the world and the model), and the
    prompts of a step split evenly over trainer and rollout data-parallel ranks (Config.validate's
    rules). Async (``parallel.rollout_ranks`` R > 0): the trainer's layout is over world - R ranks
    and the R rollout ranks run R / ``parallel.rollout_tensor`` engines (the returned layout's
    ``rollout_data``)."""
    from r1mega.parallel.layout import check_layout

    R, t = cfg.parallel.rollout_ranks, cfg.parallel.rollout_tensor
    if R and world_size <= R:
        raise ConfigError(f"rollout.mode=async with parallel.rollout_ranks={R} needs at least {R + 1} GPUs (got a "
                          f"world of {world_size}): the first world - {R} ranks train")
    if R % t:
        raise ConfigError(f"rollout.mode=async splits the rollout ranks into engines of parallel.rollout_tensor "
                          f"ranks: parallel.rollout_ranks ({R}) must be a multiple of parallel.rollout_tensor ({t})")
    try:
        layout = check_layout(cfg.parallel, world_size - R, spec)
    except ConfigError as e:
        if not R:
            raise
        raise ConfigError(f"trainer ranks (world {world_size} - parallel.rollout_ranks {R} = {world_size - R}): "
                          f"{e}") from None
    engines = ("number of rollout engines (parallel.rollout_ranks / parallel.rollout_tensor)" if R
               else "number of rollout engines (world / parallel.rollout_tensor)")
    for what, dp in (("trainer data-parallel size", layout.data), (engines, layout.rollout_data)):
        if cfg.data.prompts_per_step % dp:
            raise ConfigError(f"data.prompts_per_step ({cfg.data.prompts_per_step}) must be a multiple of the {what} "
                              f"({dp})")
    return layout


def colocated_twin(cfg):
    """``cfg`` with the engines colocated on every GPU (rollout.mode=sync, parallel.rollout_ranks=0)."""
    return dataclasses.replace(cfg, rollout=dataclasses.replace(cfg.rollout, mode="sync"),
                               parallel=dataclasses.replace(cfg.parallel, rollout_ranks=0))


def compare_colocated(cfg, spec, world: int, hw, **mem):
    """Async only: the colocated sync step time on the same ``world`` GPUs, as
    (StepTime or None, note): None with the reason when that layout is impossible; the note
    says when it does not fit in memory."""
    from r1mega.plan.estimate import plan_memory
    from r1mega.plan.steptime import step_time

    twin = colocated_twin(cfg)
    try:
        plan = plan_memory(twin, spec, validate_layout(twin, spec, world), **mem)
    except ConfigError as e:
        return None, f"not possible: {e}"
    note = "" if plan.fits else f"does not fit in memory: {plan.problems[0]}"
    return step_time(twin, spec, plan, hw), note


def make_plan(config: str | None, overrides=(), *, world_size: int | None = None, nodes: int | None = None,
              gpus_per_node: int = 8, gpu_mem_gb: float = 80.0, hf_config: str | None = None,
              reserve_gb: float = 4.0, hardware: dict | None = None):
    """(cfg, plan) for a config file and overrides; raises ConfigError on a broken layout.
    ``hardware``: Hardware fields to override (r1mega.plan.steptime); ``plan.step_time`` holds
    the step-time estimate (async: with the colocated layout on the same GPUs beside it)."""
    from r1mega.config import load_config
    from r1mega.plan.estimate import disaggregated, plan_memory
    from r1mega.plan.steptime import default_hardware, step_time

    if gpu_mem_gb <= 0:
        raise ConfigError(f"--gpu-mem-gb ({gpu_mem_gb}) must be > 0")
    if reserve_gb < 0:
        raise ConfigError(f"--reserve-gb ({reserve_gb}) must be >= 0")
    hw = default_hardware(gpu_mem_gb, **(hardware or {}))
    for name in ("tflops", "mfu", "hbm_tbps", "nvlink_gbps", "nic_gbps"):
        if getattr(hw, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} ({getattr(hw, name)}) must be > 0")
    cfg = load_config(config, list(overrides))
    world = resolve_world_size(world_size, nodes, gpus_per_node)
    spec = model_spec_for(cfg, hf_config)
    layout = validate_layout(cfg, spec, world)
    mem = dict(gpu_mem_gb=gpu_mem_gb, gpus_per_node=gpus_per_node, reserve_gb=reserve_gb)
    plan = plan_memory(cfg, spec, layout, **mem)
    plan.step_time = step_time(cfg, spec, plan, hw)
    if disaggregated(cfg):
        plan.step_time.colocated, plan.step_time.colocated_note = compare_colocated(cfg, spec, world, hw, **mem)
    if cfg.rollout.mode == "partial":
        plan.notes.append("rollout.mode=partial: the step time is estimated as sync (whole responses every step); "
                          "chunked rounds shorten the steps when response lengths have a long tail")
    return cfg, plan


def cmd_plan(args) -> int:
    from r1mega.plan.report import format_plan, plan_to_dict

    cfg, plan = make_plan(args.config, args.overrides, world_size=args.world_size, nodes=args.nodes,
                          gpus_per_node=args.gpus_per_node, gpu_mem_gb=args.gpu_mem_gb, hf_config=args.hf_config,
                          reserve_gb=args.reserve_gb,
                          hardware=dict(tflops=args.tflops, mfu=args.mfu, hbm_tbps=args.hbm_tbps,
                                        nvlink_gbps=args.nvlink_gbps, nic_gbps=args.nic_gbps))
    if args.json:
        print(json.dumps(plan_to_dict(plan, cfg), indent=2))
    else:
        print(format_plan(plan, cfg, source=args.config))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="check the parallel layout, print the per-GPU memory and step time (no GPU needed)")
    p.add_argument("config", help="YAML config")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    p.add_argument("--world-size", type=int, default=None, help="GPUs in the job (default: nodes x gpus-per-node)")
    p.add_argument("--nodes", type=int, default=None, help="nodes in the job (default 1)")
    p.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    p.add_argument("--gpu-mem-gb", type=float, default=80.0,
                   help="memory per GPU in GiB as torch.cuda reports it (H100 80GB: 79.2, H200: 139.8; default 80)")
    p.add_argument("--hf-config", default=None, help="the model's config.json (default: model.hf_path/config.json)")
    p.add_argument("--reserve-gb", type=float, default=4.0,
                   help="GiB per GPU for the CUDA context, NCCL buffers and allocator fragmentation (default 4)")
    t = p.add_argument_group("step-time model (defaults: H100 SXM; see r1mega/plan/steptime.py)")
    t.add_argument("--tflops", type=float, default=None, help="dense bf16 peak TFLOP/s per GPU (default 989)")
    t.add_argument("--mfu", type=float, default=None, help="share of the peak training and prefill reach (default 0.4)")
    t.add_argument("--hbm-tbps", type=float, default=None,
                   help="HBM TB/s per GPU (default 3.35; 4.8 when --gpu-mem-gb >= 130, H200)")
    t.add_argument("--nvlink-gbps", type=float, default=None, help="NVLink GB/s per GPU per direction (default 450)")
    t.add_argument("--nic-gbps", type=float, default=None, help="inter-node GB/s per GPU (default 50: 400 Gb/s)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(fn=cmd_plan)
