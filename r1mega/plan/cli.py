"""``r1mega plan CONFIG [key=value ...]``: check the parallel layout and print the per-GPU memory.

    r1mega plan examples/deepseek_v3_moe.yaml --nodes 32 --gpus-per-node 8 --gpu-mem-gb 139.8 \
        --hf-config examples/configs/deepseek_v3.json

No GPU, torch or model weights needed: the model comes from its ``config.json``
(``model.hf_path`` or ``--hf-config``). Exit status 0 whether or not the plan fits (the verdict
says); a broken layout is a config error (exit 2 through ``r1mega.cli.main``).
"""

from __future__ import annotations

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
    prompts of a step split evenly over trainer and rollout data-parallel ranks."""
    from r1mega.parallel.layout import check_layout

    layout = check_layout(cfg.parallel, world_size, spec)
    for what, dp in (("trainer data-parallel size", layout.data),
                     ("number of rollout engines (world / parallel.rollout_tensor)", layout.rollout_data)):
        if cfg.data.prompts_per_step % dp:
            raise ConfigError(f"data.prompts_per_step ({cfg.data.prompts_per_step}) must be a multiple of the {what} "
                              f"({dp})")
    return layout


def make_plan(config: str | None, overrides=(), *, world_size: int | None = None, nodes: int | None = None,
              gpus_per_node: int = 8, gpu_mem_gb: float = 80.0, hf_config: str | None = None,
              reserve_gb: float = 4.0):
    """(cfg, plan) for a config file and overrides; raises ConfigError on a broken layout."""
    from r1mega.config import load_config
    from r1mega.plan.estimate import plan_memory

    if gpu_mem_gb <= 0:
        raise ConfigError(f"--gpu-mem-gb ({gpu_mem_gb}) must be > 0")
    if reserve_gb < 0:
        raise ConfigError(f"--reserve-gb ({reserve_gb}) must be >= 0")
    cfg = load_config(config, list(overrides))
    world = resolve_world_size(world_size, nodes, gpus_per_node)
    spec = model_spec_for(cfg, hf_config)
    layout = validate_layout(cfg, spec, world)
    return cfg, plan_memory(cfg, spec, layout, gpu_mem_gb=gpu_mem_gb, gpus_per_node=gpus_per_node,
                            reserve_gb=reserve_gb)


def cmd_plan(args) -> int:
    from r1mega.plan.report import format_plan, plan_to_dict

    cfg, plan = make_plan(args.config, args.overrides, world_size=args.world_size, nodes=args.nodes,
                          gpus_per_node=args.gpus_per_node, gpu_mem_gb=args.gpu_mem_gb, hf_config=args.hf_config,
                          reserve_gb=args.reserve_gb)
    if args.json:
        print(json.dumps(plan_to_dict(plan, cfg), indent=2))
    else:
        print(format_plan(plan, cfg, source=args.config))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("plan", help="check the parallel layout and print the per-GPU memory plan (no GPU needed)")
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
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(fn=cmd_plan)
