"""Rollout config -> vLLM ``SamplingParams``, and the checks on prompts before they reach vLLM.

Which log-probabilities the engine returns
------------------------------------------
The engine is built with ``logprobs_mode="processed_logprobs"`` and every request asks for
``logprobs=0`` (the sampled token's logprob only). "Processed" means vLLM takes the log-softmax
*after* temperature scaling (and after top-k/top-p masking), i.e. for a response token ``y_t``::

    rollout_logprob_t = log_softmax(logits_t / T)[y_t]          (top_k = -1, top_p = 1)

which is exactly what the trainer computes for the GRPO ratio and KL: it re-scores the same
tokens at the same temperature. ``raw_logprobs`` would be ``log_softmax(logits_t)[y_t]``, the
unmodified (T = 1) distribution, which differs from the trainer's as soon as T != 1; and a
temperature-scaled value cannot be recovered from the raw one for a single token.

Two documented corner cases:

* with ``top_k`` / ``top_p`` switched on, the processed value is the logprob under the
  truncated, renormalised distribution the token was really drawn from (>= the trainer's
  full-vocabulary value); the parity metric then reports that gap;
* with ``temperature == 0`` (greedy) vLLM skips temperature and returns
  ``log_softmax(logits_t)[y_t]`` (T = 1), so score greedy samples at T = 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from r1mega.config.base import ConfigError
from r1mega.config.sections import RolloutConfig

LOGPROBS_MODE = "processed_logprobs"
"""The ``logprobs_mode`` every r1mega engine is built with (see the module docstring)."""


def make_sampling_params(cfg: RolloutConfig, n: int = 1, *, seed: int | None = None,
                         has_tokenizer: bool = True, **overrides: Any):
    """``SamplingParams`` for ``n`` samples per prompt from ``cfg``.

    ``overrides`` replace single fields of ``cfg`` for this call (``temperature``, ``top_p``,
    ``top_k``, ``max_new_tokens``, ``stop``, ``stop_token_ids``). ``seed`` gives each request
    its own generator; None (the default) draws from the engine's RNG, seeded with
    ``rollout.seed + dp_rank``. Stop strings need the engine's tokenizer (``has_tokenizer``):
    without one vLLM cannot see text, so asking for them is an error rather than a no-op.
    """
    from vllm import SamplingParams

    unknown = set(overrides) - {"temperature", "top_p", "top_k", "max_new_tokens", "stop",
                                "stop_token_ids"}
    if unknown:
        raise TypeError(f"unknown sampling override(s) {sorted(unknown)}")
    opt = {name: overrides.get(name, getattr(cfg, name)) for name in
           ("temperature", "top_p", "top_k", "max_new_tokens", "stop", "stop_token_ids")}
    if n < 1:
        raise ConfigError(f"n (samples per prompt) ({n}) must be >= 1")
    if not 0.0 < opt["top_p"] <= 1.0:
        raise ConfigError(f"rollout.top_p ({opt['top_p']}) must be in (0, 1]")
    if opt["temperature"] < 0:
        raise ConfigError(f"rollout.temperature ({opt['temperature']}) must be >= 0")
    if opt["top_k"] < -1:
        raise ConfigError(f"rollout.top_k ({opt['top_k']}) must be -1 or 0 (off) or >= 1")
    if opt["max_new_tokens"] < 1:
        raise ConfigError(f"rollout.max_new_tokens ({opt['max_new_tokens']}) must be >= 1")
    if opt["stop"] and not has_tokenizer:
        raise ConfigError(f"rollout.stop ({opt['stop']}) needs a tokenizer, but the engine was "
                          "built without one (skip_tokenizer_init); use rollout.stop_token_ids")
    return SamplingParams(
        n=n, temperature=opt["temperature"], top_p=opt["top_p"], top_k=opt["top_k"] if opt["top_k"] > 0 else -1,
        max_tokens=opt["max_new_tokens"], stop=list(opt["stop"]) or None,
        stop_token_ids=list(opt["stop_token_ids"]) or None,
        include_stop_str_in_output=True,  # the response text keeps its stop string
        seed=seed, logprobs=0, detokenize=has_tokenizer)


def check_prompts(prompts: Sequence[Sequence[int]], *, max_model_len: int, max_new_tokens: int | Sequence[int],
                  vocab_size: int | None = None) -> None:
    """Refuse prompts vLLM would reject or silently cut short, naming the prompt and values.

    A prompt must be non-empty and leave room for ``max_new_tokens`` (one limit, or one per prompt)
    within ``max_model_len``
    (otherwise vLLM ends the response early at the context limit and it would look like a
    normal 'length' finish). Token ids must lie in ``[0, vocab_size)`` when that is known.
    """
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    for i, (ids, max_new) in enumerate(zip(prompts, limits)):
        if isinstance(ids, str):
            raise TypeError(f"prompt {i} is a string; the rollout engine takes token ids "
                            "(tokenize with the policy's tokenizer first)")
        if len(ids) == 0:
            raise ValueError(f"prompt {i} is empty (0 tokens)")
        if len(ids) + max_new > max_model_len:
            raise ValueError(
                f"prompt {i} has {len(ids)} tokens; with rollout.max_new_tokens ({max_new}) "
                f"that exceeds the engine's max_model_len ({max_model_len}); shorten the prompt "
                f"(data.max_prompt_len) or raise rollout.max_model_len")
        if vocab_size is not None and (min(ids) < 0 or max(ids) >= vocab_size):
            raise ValueError(f"prompt {i} has token ids outside [0, {vocab_size}): "
                             f"min {min(ids)}, max {max(ids)}")
