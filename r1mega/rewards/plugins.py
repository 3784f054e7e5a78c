"""Reward plug-ins: reward functions of the user's own modules, named in the config by import path.

    reward:
      functions: {exact_length: my_rewards.length:exact_length}   # name -> package.module:function
      weights: {accuracy: 1.0, exact_length: 0.5}

A plug-in has the signature of the built-in rewards (``r1mega.rewards.registry``)::

    def exact_length(text: str, answer: str | None, meta: dict, cfg) -> float | RewardResult

A batch plug-in (``reward.batch_functions``) scores all of a step's samples in one call, in the
training process (for a reward served elsewhere, e.g. an external verifier that batches)::

    def verifier(texts: list[str], answers: list[str | None], metas: list[dict], cfg) -> list[float]

It runs without the pool's per-sample time limit (give its client a timeout); if it raises or
returns the wrong number of scores, every sample of the call is scored ``reward.timeout_score``.

It is imported when the config is validated, so a wrong path, a missing function or a wrong
signature is an error naming ``reward.functions.<name>`` before any work. The scorer's pool
workers import it by the same path (spawned workers inherit ``sys.path``), so the module must be
importable there: installed, on ``PYTHONPATH``, or under the working directory.
"""

from __future__ import annotations

import importlib
import inspect

from r1mega.config.base import ConfigError
from r1mega.rewards.result import RewardFn


def load_plugin(name: str, spec: str, section: str = "functions") -> RewardFn:
    """Import ``package.module:function`` and check it can be called as a reward (``section``:
    ``functions``, one sample per call, or ``batch_functions``, lists of samples)."""
    key = f"reward.{section}.{name}"
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{key} ({spec!r}) must be 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module itself failing to import
        raise ConfigError(f"{key}: module {module_name!r} cannot be imported ({type(e).__name__}: {e}); "
                          f"install it or put its directory on PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise ConfigError(f"{key}: module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise ConfigError(f"{key}: {spec!r} is a {type(fn).__name__}, not a function")
    if getattr(fn, "__qualname__", attr) != attr:  # a nested or bound function does not pickle by name
        raise ConfigError(f"{key}: {spec!r} must be a module-level function (pool workers import it by name)")
    try:
        inspect.signature(fn).bind("text", None, {}, None)
    except TypeError:
        call = ("fn(texts, answers, metas, cfg) and returns one float per sample" if section == "batch_functions"
                else "fn(text, answer, meta, cfg) and returns a float or a RewardResult")
        raise ConfigError(f"{key}: {spec} has the signature {inspect.signature(fn)}; a reward is called as "
                          f"{call}") from None
    except ValueError:  # builtins without a signature: accept
        pass
    return fn


def reward_table(functions: dict[str, str]) -> dict[str, RewardFn]:
    """The built-in rewards plus the plug-ins of ``reward.functions`` (which may not shadow them)."""
    from r1mega.rewards.registry import REWARDS

    table = dict(REWARDS)
    for name, spec in functions.items():
        if name in REWARDS:
            raise ConfigError(f"reward.functions.{name}: {name!r} is a built-in reward; give the plug-in "
                              f"another name")
        table[name] = load_plugin(name, spec)
    return table


def batch_table(batch_functions: dict[str, str], taken) -> dict:
    """The batch plug-ins of ``reward.batch_functions``; their names may not repeat ``taken``'s."""
    table = {}
    for name, spec in batch_functions.items():
        if name in taken:
            raise ConfigError(f"reward.batch_functions.{name}: {name!r} is already a reward (built-in or in "
                              f"reward.functions); give the batch plug-in another name")
        table[name] = load_plugin(name, spec, section="batch_functions")
    return table
