"""RL algorithm math as pure tensor functions: advantages, policy loss, KL, aggregation, and the
DAPO sample filters. Imports torch only (no torch.distributed setup, megatron, vLLM or Triton).

Names are loaded lazily (PEP 562) so that ``r1mega.algorithms.config`` (imported by the config
tree, and so by every pool worker of the reward scorer) does not pull in torch.
"""

import importlib

import r1mega.config  # noqa: F401  the config tree imports our config section: load it first (no cycle)

_EXPORTS = {
    "advantages": ("ADVANTAGES", "assign_advantages", "compute_advantages", "dr_grpo_advantages", "grpo_advantages", "group_stats",
                   "reinforce_pp_advantages", "reinforce_pp_baseline_advantages", "rloo_advantages"),
    "aggregation": ("AGGREGATIONS", "aggregate", "length_normalizer", "normalizer"),
    "config": ("AlgorithmConfig",),
    "kl": ("KL_ESTIMATORS", "kl_in_reward", "kl_k1", "kl_k2", "kl_k3", "kl_penalty"),
    "loss": ("clipped_pg_loss", "policy_loss", "tis_weights"),
    "sample_filters": ("apply_soft_overlong_penalty", "dynamic_sampling", "overlong_filter", "soft_overlong_penalty"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"r1mega.algorithms.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'r1mega.algorithms' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
