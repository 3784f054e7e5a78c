"""Reward plug-ins: your own rewards, next to r1mega's, without editing r1mega.

Name them in the config by import path and give them a weight:

    reward:
      functions:
        boxed_once: examples.reward_plugins:boxed_once
        no_hedging: examples.reward_plugins:no_hedging
      weights: {accuracy: 1.0, format: 0.2, boxed_once: 0.2, no_hedging: 0.1}

or on the command line (from the repository root, so that `examples` is importable; elsewhere put
the module's directory on PYTHONPATH or install it):

    r1mega train CONFIG "reward.functions={boxed_once: examples.reward_plugins:boxed_once}" \
        "reward.weights={accuracy: 1.0, format: 0.2, boxed_once: 0.2}"

A plug-in is a module-level function ``fn(text, answer, meta, cfg) -> float | RewardResult``:
``text`` is the response, ``answer`` the reference answer (None for general prompts), ``meta`` the
prompt's metadata plus ``response_len`` (tokens) and ``finish_reason``, ``cfg`` the RewardConfig.
It runs in the scorer's worker processes under ``reward.timeout_s`` like the built-in rewards;
a plug-in that raises costs that sample ``reward.timeout_score`` and a logged warning. The config
is checked when it loads: a wrong path or signature is an error naming ``reward.functions.<name>``.
"""

import re

from r1mega.rewards.result import RewardResult

BOXED = re.compile(r"\\boxed\s*\{")
HEDGES = ("I think", "probably", "I'm not sure", "might be", "maybe")


def boxed_once(text, answer, meta, cfg):
    """1 for exactly one \\boxed{} answer; 0 for none or several (boxing every candidate is a way to
    game an accuracy reward that reads the last box)."""
    n = len(BOXED.findall(text))
    return RewardResult(float(n == 1), {"boxes": n})


def no_hedging(text, answer, meta, cfg):
    """-1 when the text after the reasoning hedges its answer, else 0 (a bare float is fine too)."""
    final = text.rsplit("</think>", 1)[-1]
    return -1.0 if any(h.lower() in final.lower() for h in HEDGES) else 0.0
