"""Colocated vLLM rollout: the engine (``engine``), sampling options (``sampling``), groups of
samples for training, evaluation and rejection sampling (``groups``: build the engine, sample G per
prompt, score, gather), the trainer -> engine weight sync (``weight_sync``), logprob parity
(``parity``) and the ``r1mega generate`` core (``generate_cmd``).

Importing this package does not import vLLM; building a :class:`RolloutEngine` does.
"""

from r1mega.rollout.engine import RolloutEngine, StalePolicyError, rollout_layout
from r1mega.rollout.groups import gather_groups, make_engine, rollout_groups, sample_groups, score_groups
from r1mega.rollout.parity import logprob_parity, reference_logprobs
from r1mega.rollout.sampling import LOGPROBS_MODE, check_prompts, make_sampling_params
from r1mega.rollout.weight_sync import SyncStats, WeightSync, iter_buckets

__all__ = ["RolloutEngine", "StalePolicyError", "rollout_layout", "make_engine", "sample_groups", "score_groups",
           "gather_groups", "rollout_groups", "logprob_parity",
           "reference_logprobs", "LOGPROBS_MODE", "check_prompts", "make_sampling_params",
           "SyncStats", "WeightSync", "iter_buckets"]
