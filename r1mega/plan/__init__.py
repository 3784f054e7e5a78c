"""``r1mega plan``: parameter counts from HF configs, the per-GPU memory model, the step time, the report.

Pure Python (no torch). The model comes from :func:`r1mega.models.arch.read_hf_config` and its
parameter counts from :func:`r1mega.models.params.param_counts`; here: ``estimate`` (memory
per trainer GPU in each phase of the RL step, with its colocated engine), ``rollout_gpu`` (memory
of a dedicated rollout GPU, rollout.mode=async), ``steptime`` (seconds per step, colocated or
disaggregated), ``report`` (table / JSON), ``cli`` (the command).
"""

from r1mega.models.params import ParamCounts, param_counts
from r1mega.plan.estimate import MemoryPlan, plan_memory

__all__ = ["MemoryPlan", "ParamCounts", "param_counts", "plan_memory"]
