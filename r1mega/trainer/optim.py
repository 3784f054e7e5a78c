"""Megatron DDP, optimizer and LR schedule for a list of model chunks: the one setup shared by
the policy (:class:`r1mega.trainer.policy.Policy`) and the reward model
(:class:`r1mega.reward_model.trainer.RewardTrainer`).

    opt = build_optimizer(cfg, chunks, total_steps)   # DDP wrap -> optimizer -> grad wiring -> schedule
    opt.zero_grad(); <forward/backward through Megatron's schedule>; stepped, grad_norm = opt.step()

``cfg.optimizer`` holds the hyper-parameters, ``cfg.parallel.distributed_optimizer`` shards the
optimizer state over data-parallel ranks. Gradients are reduced in fp32; the schedule warms up
linearly over ``optimizer.warmup_steps`` then decays (``optimizer.decay``) to ``min_lr`` at
``total_steps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from r1mega.config import Config


@dataclass
class Optim:
    """DDP-wrapped chunks with their Megatron optimizer and LR/weight-decay scheduler."""

    chunks: list   # DistributedDataParallel(chunk) per model chunk of this rank
    optimizer: Any  # megatron.core.optimizer.MegatronOptimizer
    scheduler: Any  # megatron.core.optimizer_param_scheduler.OptimizerParamScheduler

    def zero_grad(self) -> None:
        """Clear the optimizer's gradients and DDP's gradient buffers (before a backward pass)."""
        self.optimizer.zero_grad()
        for c in self.chunks:
            c.zero_grad_buffer()

    def step(self) -> tuple[bool, float]:
        """Collective. One optimizer and schedule step, skipped (gradients zeroed) when any
        gradient on any rank is NaN/inf. Returns (applied, grad norm; NaN when skipped)."""
        if not grads_finite(self.chunks):
            self.optimizer.zero_grad()
            return False, float("nan")
        ok, grad_norm, _ = self.optimizer.step()
        self.scheduler.step(increment=1)
        return bool(ok), float(grad_norm) if grad_norm is not None else float("nan")

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]


def build_optimizer(cfg: Config, chunks: list, total_steps: int) -> Optim:
    """Wrap ``chunks`` in Megatron DDP and build their optimizer and scheduler from ``cfg``.
    ``total_steps``: the optimizer steps of the run (the end of the LR decay)."""
    from megatron.core.distributed import (DistributedDataParallel, DistributedDataParallelConfig,
                                           finalize_model_grads)
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    o, distributed = cfg.optimizer, cfg.parallel.distributed_optimizer
    ddp_cfg = DistributedDataParallelConfig(use_distributed_optimizer=distributed, grad_reduce_in_fp32=True,
                                            overlap_grad_reduce=False)
    wrapped = [DistributedDataParallel(config=c.config, ddp_config=ddp_cfg, module=c) for c in chunks]
    dtype = chunks[0].config.params_dtype
    optimizer = get_megatron_optimizer(
        OptimizerConfig(optimizer=o.name, sgd_momentum=o.momentum, lr=o.lr, min_lr=o.min_lr,
                        weight_decay=o.weight_decay, adam_beta1=o.beta1, adam_beta2=o.beta2, adam_eps=o.eps,
                        clip_grad=o.clip_grad, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
                        params_dtype=dtype, use_distributed_optimizer=distributed),
        wrapped)
    # What Megatron's schedule calls after the last backward: DP grad reduction, tied embedding
    # grads across the first/last pipeline stages, layer-norm grads under SP.
    for c in wrapped:
        c.config.finalize_model_grads_func = finalize_model_grads
        c.config.grad_scale_func = optimizer.scale_loss
        c.config.no_sync_func = [m.no_sync for m in wrapped] if len(wrapped) > 1 else wrapped[0].no_sync
    decay_steps = max(total_steps, o.warmup_steps + 1)
    scheduler = OptimizerParamScheduler(
        optimizer, init_lr=0.0 if o.warmup_steps else o.lr, max_lr=o.lr, min_lr=o.min_lr,
        lr_warmup_steps=o.warmup_steps, lr_decay_steps=decay_steps, lr_decay_style=o.decay,
        start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=decay_steps, wd_incr_style="constant",
        # at resume the config's lr, schedule and weight decay win; only the step count comes from the
        # checkpoint (Megatron's default keeps the checkpoint's values and ignores the user's change)
        override_opt_param_scheduler=True, use_checkpoint_opt_param_scheduler=False)
    return Optim(chunks=wrapped, optimizer=optimizer, scheduler=scheduler)


def grads_finite(chunks: list) -> bool:
    """Collective: True when every gradient (Megatron's ``main_grad`` or ``.grad``) on every rank is finite."""
    flag = torch.ones(1)
    for c in chunks:
        for p in c.parameters():
            g = getattr(p, "main_grad", None)
            g = p.grad if g is None else g
            if g is not None and not torch.isfinite(g).all():
                flag.zero_()
                break
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
