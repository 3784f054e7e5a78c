"""Config section for the RL algorithm (advantages, policy loss, KL, aggregation, sample filters)."""

from __future__ import annotations

from dataclasses import dataclass

from r1mega.config.base import ConfigError, option

# The keys of the tables in advantages.ADVANTAGES, kl.KL_ESTIMATORS and aggregation.AGGREGATIONS,
# spelled out so that the config loads without torch; tests/test_config_refusals.py pins them equal.
ADVANTAGE_NAMES = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
KL_ESTIMATOR_NAMES = ("k1", "k2", "k3")
LOSS_AGG_NAMES = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant_norm")
IS_LEVEL_NAMES = ("token", "sequence", "geometric")  # offpolicy.IS_LEVELS


@dataclass(kw_only=True)
class AlgorithmConfig:
    """How advantages and the policy loss are computed."""

    group_size: int = option(8, "G: responses sampled per prompt (the GRPO group).")
    advantage: str = option("grpo", "Advantage estimator name.", choices=ADVANTAGE_NAMES)
    eps: float = option(1e-6, "Added to the std in GRPO / REINFORCE++ normalisation: (r - mean) / (std + eps).")
    clip_low: float = option(0.2, "PPO clip: ratio is clipped below at 1 - clip_low.")
    clip_high: float = option(0.2, "PPO clip: ratio is clipped above at 1 + clip_high (DAPO clip-higher: 0.28).")
    dual_clip: float | None = option(None, "Dual-clip c > 1: for negative advantages the token loss is capped at -c * A (None: off).")
    kl_coef: float = option(0.0, "Coefficient of the KL penalty to the reference policy (0 disables the reference model).")
    kl_estimator: str = option("k3", "KL estimator: k1, k2 or k3 (GRPO uses k3).", choices=KL_ESTIMATOR_NAMES)
    kl_in_reward: bool = option(False, "Subtract kl_coef * KL from the reward before advantages instead of adding it to the loss.")
    entropy_coef: float = option(0.0, "Entropy bonus coefficient.")
    loss_agg: str = option("token_mean", "Loss aggregation mode.", choices=LOSS_AGG_NAMES)
    tis_cap: float | None = option(None, "Truncated importance sampling cap C: tokens weighted by min(pi_old / pi_rollout, C) (None: off).")
    rollout_is: str | None = option(None, "Importance sampling w = pi_old / pi_rollout of the engine's samples (its numerics "
                                    "or its staleness; r1mega.algorithms.offpolicy): truncate (TIS: w capped at "
                                    "rollout_is_upper) or mask (MIS: tokens or sequences whose w leaves [rollout_is_lower, "
                                    "rollout_is_upper] get no gradient); None: off. algorithm.tis_cap is token-level truncate.",
                                    choices=("truncate", "mask"))
    rollout_is_level: str = option("token", "Where w is taken: token, sequence (the product of the sequence's token "
                                   "ratios, on each of its tokens) or geometric (their geometric mean).",
                                   choices=IS_LEVEL_NAMES)
    rollout_is_upper: float = option(2.0, "TIS cap / MIS upper bound of w.")
    rollout_is_lower: float | None = option(None, "MIS lower bound of w (None: no lower bound).")
    dynamic_sampling: bool = option(False, "DAPO dynamic sampling: drop groups whose rewards are all equal.")
    overlong_filter: bool = option(False, "DAPO overlong filtering: truncated samples get no policy-gradient signal.")
    overlong_buffer: int = option(1024, "DAPO soft overlong punishment: length of the penalty ramp before the max length.")
    overlong_penalty: float = option(0.0, "DAPO soft overlong punishment magnitude added to the reward (0: off; do not also weight the 'overlong' reward).")
    routing_replay: str = option("none", "MoE routing replay: none; r3 (the rollout engine records each token's experts "
                                 "and every trainer pass replays them, arXiv:2510.11370); r2 (the old-logprob pass "
                                 "records its routing and the training passes replay it; needs that pass: "
                                 "trainer.old_logprobs recompute). Needs a MoE model.", choices=("none", "r2", "r3"))

    def validate(self) -> None:
        if self.group_size < 1:
            raise ConfigError(f"algorithm.group_size ({self.group_size}) must be >= 1")
        for key in ("advantage", "kl_estimator", "loss_agg"):
            valid = {"advantage": ADVANTAGE_NAMES, "kl_estimator": KL_ESTIMATOR_NAMES, "loss_agg": LOSS_AGG_NAMES}[key]
            if getattr(self, key) not in valid:
                raise ConfigError(f"algorithm.{key} ({getattr(self, key)!r}) must be one of {list(valid)}")
        if not self.eps > 0:
            raise ConfigError(f"algorithm.eps ({self.eps}) must be > 0")
        if self.clip_low < 0 or self.clip_low >= 1:
            raise ConfigError(f"algorithm.clip_low ({self.clip_low}) must be in [0, 1) so that 1 - clip_low > 0")
        if self.clip_high < 0:
            raise ConfigError(f"algorithm.clip_high ({self.clip_high}) must be >= 0")
        if self.dual_clip is not None and not self.dual_clip > 1:
            raise ConfigError(f"algorithm.dual_clip ({self.dual_clip}) must be > 1 (or null to disable)")
        if self.kl_coef < 0:
            raise ConfigError(f"algorithm.kl_coef ({self.kl_coef}) must be >= 0")
        if self.kl_in_reward and self.kl_coef > 0:
            raise ConfigError(f"algorithm.kl_in_reward=true (with algorithm.kl_coef {self.kl_coef} > 0) is not "
                              f"supported by the RL loop yet (the reference logprobs are computed after advantages); "
                              f"use the KL term in the loss (kl_in_reward=false)")
        if self.entropy_coef < 0:
            raise ConfigError(f"algorithm.entropy_coef ({self.entropy_coef}) must be >= 0")
        if self.tis_cap is not None and not self.tis_cap > 0:
            raise ConfigError(f"algorithm.tis_cap ({self.tis_cap}) must be > 0 (or null to disable)")
        if self.rollout_is is not None:
            if self.tis_cap is not None:
                raise ConfigError(f"algorithm.tis_cap ({self.tis_cap}) and algorithm.rollout_is ({self.rollout_is!r}) "
                                  f"are two corrections of the same ratio: set one (tis_cap C is rollout_is=truncate, "
                                  f"rollout_is_level=token, rollout_is_upper=C)")
            if not 0 < self.rollout_is_upper < float("inf"):
                raise ConfigError(f"algorithm.rollout_is_upper ({self.rollout_is_upper}) must be a finite number > 0")
            if self.rollout_is_lower is not None:
                if self.rollout_is != "mask":
                    raise ConfigError(f"algorithm.rollout_is_lower ({self.rollout_is_lower}) applies to "
                                      f"rollout_is=mask only (truncate caps from above); set it to null")
                if not 0 <= self.rollout_is_lower <= self.rollout_is_upper:
                    raise ConfigError(f"algorithm.rollout_is_lower ({self.rollout_is_lower}) must be in "
                                      f"[0, rollout_is_upper = {self.rollout_is_upper}]")
        if self.overlong_buffer < 0:
            raise ConfigError(f"algorithm.overlong_buffer ({self.overlong_buffer}) must be >= 0")
        if self.overlong_penalty < 0:
            raise ConfigError(f"algorithm.overlong_penalty ({self.overlong_penalty}) must be >= 0 (it is subtracted)")
