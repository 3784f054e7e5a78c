"""``r1mega plan``: parameter counts from HF configs, the per-GPU memory model, the report.

Pure Python (no torch): ``hfconfig`` (model sizes and parameter counts), ``estimate`` (memory
per GPU in each phase of the RL step), ``report`` (table / JSON), ``cli`` (the command).
"""

from r1mega.plan.estimate import MemoryPlan, plan_memory
from r1mega.plan.hfconfig import ModelSpec, ParamCounts, model_spec, param_counts

__all__ = ["MemoryPlan", "ModelSpec", "ParamCounts", "model_spec", "param_counts", "plan_memory"]
