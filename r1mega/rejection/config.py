"""Config section of rejection sampling (DeepSeek-R1 stage 3): how many samples per prompt and
the thresholds of the filters that decide which responses become SFT data.

The section is read from the ``rejection:`` mapping of a YAML file (or ``rejection.key=value``
overrides) by :func:`r1mega.rejection.run.load_configs`; the other sections of the same file
(model, parallel, rollout, reward, data) configure the engine, the scorer and the prompts.
"""

from __future__ import annotations

from dataclasses import dataclass

from r1mega.config.base import ConfigError, option


@dataclass(kw_only=True)
class RejectionConfig:
    """Sampling and filtering of rejection sampling; filters run in the order of ``REASONS``."""

    k: int = option(16, "Responses sampled per prompt (the command's -k overrides it).")
    batch_prompts: int = option(64, "Prompts per engine call (the progress bar advances per call).")
    correctness_reward: str = option("auto", "Reward whose unweighted score decides correctness: auto (each row's "
                                     "own, r1mega.rewards.correctness: accuracy for math, code for rows with tests, "
                                     "countdown), or a name in r1mega.rewards.REWARDS for every row; it is scored even "
                                     "when reward.weights omits it.")
    min_score: float = option(1.0, "Keep a response only when its correctness_reward score is >= this "
                              "(1.0: exactly correct answers).")
    drop_truncated: bool = option(True, "Drop responses cut at rollout.max_new_tokens (finish reason 'length').")
    max_response_tokens: int | None = option(None, "Drop responses longer than this many tokens (None: no limit "
                                             "besides rollout.max_new_tokens).")
    max_code_fraction: float = option(0.5, "Drop responses whose share of non-space characters inside ``` "
                                      "fences is above this (1.0: never).")
    language: str | None = option(None, "Target language (a code of r1mega.rewards.language.LANGUAGES); None: "
                                  "reward.language. A prompt row's 'language' field overrides it.")
    min_language_share: float = option(0.9, "Drop responses whose prose (outside code fences and math) has a "
                                       "smaller share of target-language words than this (0.0: never).")
    max_paragraph_chars: int | None = option(3000, "Drop responses with a prose paragraph (text between blank "
                                             "lines, outside code fences) longer than this many characters "
                                             "(None: no limit).")
    dedup_threshold: float | None = option(0.7, "Drop a response whose n-gram Jaccard similarity with a response "
                                           "already kept for the same prompt is >= this (None: no dedup).")
    dedup_ngram: int = option(5, "n of the word n-gram shingles used by the near-duplicate check.")
    max_per_prompt: int | None = option(4, "Keep at most this many responses per prompt (None: all that pass).")
    prefer_shorter: bool = option(False, "Dedup and cap a prompt's passing responses shortest first (fewer "
                                  "tokens) instead of in sampling order.")
    record_unsolved: bool = option(True, "Write unsolved.jsonl: the prompts with no kept response and why.")

    def judge(self, metadata) -> str:
        """The reward that decides whether a response to a row with ``metadata`` is correct."""
        from r1mega.rewards.correctness import correctness_reward

        return correctness_reward(metadata) if self.correctness_reward == "auto" else self.correctness_reward

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"rejection.k ({self.k}) must be >= 1")
        if self.batch_prompts < 1:
            raise ConfigError(f"rejection.batch_prompts ({self.batch_prompts}) must be >= 1")
        from r1mega.rewards.registry import REWARDS

        if self.correctness_reward != "auto" and self.correctness_reward not in REWARDS:
            raise ConfigError(f"rejection.correctness_reward: unknown reward {self.correctness_reward!r}; "
                              f"valid: auto, {', '.join(sorted(REWARDS))}")
        for name in ("max_code_fraction", "min_language_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"rejection.{name} ({v}) must be in [0, 1]")
        if self.dedup_threshold is not None and not 0.0 < self.dedup_threshold <= 1.0:
            raise ConfigError(f"rejection.dedup_threshold ({self.dedup_threshold}) must be in (0, 1] "
                              f"(or null to turn dedup off)")
        if self.dedup_ngram < 1:
            raise ConfigError(f"rejection.dedup_ngram ({self.dedup_ngram}) must be >= 1")
        for name in ("max_response_tokens", "max_paragraph_chars", "max_per_prompt"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"rejection.{name} ({v}) must be >= 1 (or null for no limit)")
        if self.language is not None:
            from r1mega.rewards.language import LANGUAGES

            if self.language not in LANGUAGES:
                raise ConfigError(f"rejection.language ({self.language!r}) is not one of: "
                                  f"{', '.join(sorted(LANGUAGES))}")
