"""Name -> reward function. Each is a plain module-level function (it pickles to pool workers):

    fn(response_text, reference_answer, metadata, cfg: RewardConfig) -> RewardResult
"""

from __future__ import annotations

from r1mega.rewards.accuracy import accuracy_reward
from r1mega.rewards.code import code_reward
from r1mega.rewards.countdown import countdown_reward
from r1mega.rewards.format import format_reward
from r1mega.rewards.language import language_reward
from r1mega.rewards.length import length_reward, overlong_reward
from r1mega.rewards.result import RewardFn


REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "language": language_reward,
    "length": length_reward,
    "overlong": overlong_reward,
    "countdown": countdown_reward,
    "code": code_reward,
}
