"""r1mega's configuration: one nested dataclass tree, loaded from YAML plus overrides.

    cfg = load_config("r1mega/recipes/tiny_cpu.yaml", ["rollout.temperature=0.8", "run.steps=10"])

Every field is documented (``r1mega config --schema`` prints them). Unknown keys, wrong types
and impossible combinations raise :class:`ConfigError` naming the key, the value and what
was expected.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

from r1mega.algorithms.config import AlgorithmConfig
from r1mega.config.base import (ConfigError, apply_override, describe, from_dict, option, parse_override,
                                to_dict, validate_tree)
from r1mega.config.sections import (DataConfig, EvalConfig, ModelConfig, OptimizerConfig, ParallelConfig, RolloutConfig,
                                    RunConfig, SFTConfig, TrainerConfig)
from r1mega.rewards.config import RewardConfig

__all__ = ["Config", "ConfigError", "load_config", "config_from_dict", "describe", "to_dict", "option"]


@dataclass(kw_only=True)
class Config:
    """The whole run."""

    model: ModelConfig = option(factory=ModelConfig, help="The policy model.")
    parallel: ParallelConfig = option(factory=ParallelConfig, help="Trainer and rollout parallel layout.")
    rollout: RolloutConfig = option(factory=RolloutConfig, help="Rollout engines and sampling.")
    algorithm: AlgorithmConfig = option(factory=AlgorithmConfig, help="Advantages and policy loss.")
    reward: RewardConfig = option(factory=RewardConfig, help="Reward functions and their weights.")
    optimizer: OptimizerConfig = option(factory=OptimizerConfig, help="Optimizer and LR schedule.")
    data: DataConfig = option(factory=DataConfig, help="Prompt data.")
    trainer: TrainerConfig = option(factory=TrainerConfig, help="Micro-batching and PPO epochs.")
    eval: EvalConfig = option(factory=EvalConfig, help="Held-out evaluation.")
    sft: SFTConfig = option(factory=SFTConfig, help="Supervised fine-tuning data (r1mega sft).")
    run: RunConfig = option(factory=RunConfig, help="Outputs, length, checkpoints, logging.")

    def check_rollout_lengths(self) -> None:
        """Prompts plus responses fit the engine's context (checked wherever an engine is built:
        SFT and reward-model runs do not need it)."""
        rollout_len = self.rollout.max_model_len or self.model.max_seq_len
        if self.data.max_prompt_len + self.rollout.max_new_tokens > rollout_len:
            raise ConfigError(
                f"data.max_prompt_len ({self.data.max_prompt_len}) + rollout.max_new_tokens "
                f"({self.rollout.max_new_tokens}) exceeds the engine context length ({rollout_len}); "
                f"raise model.max_seq_len / rollout.max_model_len or shorten one of them")

    def validate(self, world_size: int | None = None) -> None:
        """Check the combinations across sections (each section checks itself first, in
        :func:`validate_tree`); with ``world_size``, also the parallel layout against the model."""
        if self.optimizer.name != "adam" and self.parallel.distributed_optimizer:
            raise ConfigError(f"optimizer.name={self.optimizer.name} needs parallel.distributed_optimizer=false "
                              f"(Megatron's distributed optimizer only shards Adam)")
        if self.model.fp8 and self.model.dtype == "float32":
            raise ConfigError("model.fp8=true needs model.dtype bfloat16 or float16 (got float32)")
        if self.reward.model_path and self.parallel.context > 1:
            raise ConfigError(f"reward.model_path ({self.reward.model_path!r}) needs parallel.context = 1, got "
                              f"{self.parallel.context}: the reward is read at each sequence's last token, which "
                              f"context parallelism splits off")
        async_mode = self.rollout.mode == "async"
        if async_mode != (self.parallel.rollout_ranks > 0):
            raise ConfigError(f"rollout.mode={self.rollout.mode} with parallel.rollout_ranks={self.parallel.rollout_ranks}: "
                              f"async rollout needs ranks of its own (parallel.rollout_ranks >= 1), and only async "
                              f"uses them")
        if async_mode:
            if self.parallel.rollout_ranks % self.parallel.rollout_tensor:
                raise ConfigError(f"rollout.mode=async splits the rollout ranks into engines of parallel.rollout_tensor "
                                  f"ranks: parallel.rollout_ranks ({self.parallel.rollout_ranks}) must be a multiple of "
                                  f"parallel.rollout_tensor ({self.parallel.rollout_tensor})")
            if self.data.eval:
                raise ConfigError(f"rollout.mode=async does not evaluate (the trainer ranks hold no engine): set "
                                  f"data.eval=null (got {self.data.eval!r}) and evaluate the exported policy (run.export_hf) "
                                  f"with `r1mega eval`")
        replay = self.algorithm.routing_replay
        if replay == "r2" and self.trainer.old_logprob_source() != "recompute":
            raise ConfigError(f"algorithm.routing_replay=r2 replays the routing of the old-logprob pass, but "
                              f"trainer.old_logprobs resolves to {self.trainer.old_logprob_source()!r} (no such pass): "
                              f"set trainer.old_logprobs=recompute, or use r3")
        if replay != "none" and self.parallel.context > 1:
            raise ConfigError(f"algorithm.routing_replay={replay} needs parallel.context = 1 (got {self.parallel.context}): "
                              f"context parallelism reorders each sequence's tokens")
        if world_size is not None:
            arch = None
            if self.model.hf_path and os.path.exists(self.model.hf_path):
                from r1mega.models.arch import check_trainable, read_hf_config
                arch = read_hf_config(self.model.hf_path)
                check_trainable(arch)
                if (replay != "none" or self.rollout.return_routed_experts) and not arch.is_moe:
                    what = (f"algorithm.routing_replay={replay}" if replay != "none"
                            else "rollout.return_routed_experts=true")
                    raise ConfigError(f"{what} needs a mixture-of-experts model, but model.hf_path "
                                      f"({self.model.hf_path}) is dense: set algorithm.routing_replay=none")
            layout = _check_layout(self.parallel, world_size, arch)
            engines = (("number of rollout engines (parallel.rollout_ranks / parallel.rollout_tensor)",
                        self.parallel.rollout_ranks // self.parallel.rollout_tensor) if async_mode
                       else ("number of rollout engines (world / parallel.rollout_tensor)", layout.rollout_data))
            for what, dp in (("trainer data-parallel size", layout.data), engines):
                if self.data.prompts_per_step % dp:
                    raise ConfigError(f"data.prompts_per_step ({self.data.prompts_per_step}) must be a multiple of "
                                      f"the {what} ({dp})")


def _check_layout(p, world_size, arch):
    from r1mega.parallel.layout import check_layout
    return check_layout(p, world_size, arch)


def config_from_dict(data: dict, overrides: Sequence[str] = ()) -> Config:
    data = dict(data or {})
    for text in overrides:
        path, value = parse_override(text)
        apply_override(data, path, value)
    cfg = from_dict(Config, data)
    validate_tree(cfg)
    return cfg


def read_yaml(path: str | os.PathLike | None) -> dict[str, Any]:
    """The top-level mapping of a YAML config file ({} for None); errors name the file."""
    import yaml

    if path is None:
        return {}
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def split_config_arg(path, overrides: Sequence[str] = ()) -> tuple[str | None, list[str]]:
    """``(path, overrides)`` with a ``path`` that is no file but reads ``key=value`` moved to the
    front of the overrides: ``r1mega train model.hf_path=... data.train=...`` needs no YAML file."""
    if path is not None and "=" in os.fspath(path) and not os.path.exists(path):
        return None, [os.fspath(path), *overrides]
    return path, list(overrides)


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config (None: all defaults), apply ``key.sub=value`` overrides, validate.
    ``path`` may be the first override instead (see :func:`split_config_arg`)."""
    path, overrides = split_config_arg(path, overrides)
    data = read_yaml(path)
    if path is not None:
        try:
            config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    try:
        return config_from_dict(data, overrides)
    except ConfigError as e:
        if overrides:
            raise ConfigError(f"{e} (with the command-line overrides {list(overrides)})") from None
        raise


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    import yaml

    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
