"""Rule-based rewards (accuracy, format, language consistency, length, overlong, countdown) and the scorer
that runs them over a batch in a process pool with a per-sample timeout. Pure Python + sympy:
no torch, megatron, vLLM or Triton."""

import r1mega.config  # noqa: F401  the config tree imports our config section: load it first (no cycle)
from r1mega.rewards.accuracy import accuracy_reward
from r1mega.rewards.config import RewardConfig
from r1mega.rewards.countdown import countdown_check, countdown_reward
from r1mega.rewards.format import format_reward, lenient_format, strict_format
from r1mega.rewards.language import language_reward, language_share
from r1mega.rewards.length import length_reward, linear_length_score, overlong_reward, soft_overlong_penalty
from r1mega.rewards.math_extract import extract_answer
from r1mega.rewards.math_verify import is_equiv
from r1mega.rewards.registry import REWARDS
from r1mega.rewards.result import RewardFn, RewardResult
from r1mega.rewards.scorer import RewardScorer, evaluate, score_samples

__all__ = [
    "REWARDS", "RewardConfig", "RewardFn", "RewardResult", "RewardScorer", "accuracy_reward", "countdown_check",
    "countdown_reward", "evaluate",
    "extract_answer", "format_reward", "is_equiv", "language_reward", "language_share", "lenient_format",
    "length_reward", "linear_length_score", "overlong_reward", "score_samples", "soft_overlong_penalty",
    "strict_format",
]
