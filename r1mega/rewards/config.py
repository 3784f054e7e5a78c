"""Config section for rewards: which reward functions, their weights and the scorer."""

from __future__ import annotations

from dataclasses import dataclass

from r1mega.config.base import ConfigError, option

from r1mega.rewards.math_extract import DEFAULT_ORDER, EXTRACTORS

EXTRACT_MODES = tuple(EXTRACTORS)


@dataclass(kw_only=True)
class RewardConfig:
    """Which rewards score a sample and how they are combined."""

    weights: dict[str, float] = option(factory=lambda: {"accuracy": 1.0, "format": 0.2},
                                       help="Reward name -> weight; the sample reward is the weighted sum.")
    functions: dict[str, str] = option(factory=dict,
                                       help="Plug-in rewards: name -> 'package.module:function', called as "
                                            "fn(text, answer, meta, cfg) -> float or RewardResult; use the name "
                                            "in `weights` (see r1mega/rewards/plugins.py).")
    batch_functions: dict[str, str] = option(factory=dict,
                                             help="Batch plug-in rewards: name -> 'package.module:function', "
                                                  "called once per step as fn(texts, answers, metas, cfg) -> "
                                                  "list of floats, in the training process.")
    timeout_s: float = option(10.0, "Per-sample time limit of the scorer; a sample past it gets `timeout_score`.")
    timeout_score: float = option(0.0, "Score given to a sample whose reward timed out or raised.")
    num_workers: int = option(2, "Processes in the scorer's pool (0: score in this process, no time limit).")
    start_method: str = option("spawn", "How pool workers start (fork is unsafe with torch threads).",
                               choices=("spawn", "forkserver"))
    # reward model (general prompts: samples of kind "general")
    model_path: str | None = option(None, "Reward model directory (r1mega train-rm output) scoring samples of kind "
                                    "'general'; reasoning samples keep the rule rewards of `weights`.")
    model_weight: float = option(1.0, "General samples get reward = model_weight x reward-model score.")
    model_normalize: bool = option(True, "Standardise reward-model scores with the mean/std measured when it was trained.")
    # accuracy
    extract_order: list[str] = option(factory=lambda: list(DEFAULT_ORDER),
                                      help="Answer extraction strategies tried in order (r1mega/rewards/math_extract.py): "
                                           "boxed, answer_tag, hashes, answer_is, statement, bare; last_number is "
                                           "opt-in (it rewards truncated reasoning).")
    extract_after_think: bool = option(True, "Look for the answer only after the last </think> (none if the reasoning never closes).")
    math_timeout_s: float = option(2.0, "Time limit of one symbolic (sympy) equivalence check; past it the answer counts as wrong.")
    # format
    format_mode: str = option("strict", "Format check: strict (one <think>..</think> block first, then the answer) or lenient.",
                              choices=("strict", "lenient"))
    think_prefilled: bool = option(False, "The prompt template already ends with <think>, so responses start inside the reasoning.")
    answer_tags: bool = option(False, "The answer must be wrapped in <answer>...</answer> (R1-Zero template).")
    # code (r1mega/rewards/code.py: programs run in the sandbox against the row's tests)
    code_language: str = option("python", "Code reward: language of a code block whose fence names none (and "
                                "whose row has no `language`).", choices=("python", "cpp"))
    code_scoring: str = option("all_pass", "Code reward: all_pass (1 when every test passes, stopping at the "
                               "first failure) or fraction (share of tests passed).", choices=("all_pass", "fraction"))
    code_test_time_s: float = option(2.0, "Code reward: CPU-time limit of one test (whole seconds, rounded up); "
                                           "its wall clock is 3x this + 1 s.")
    code_budget_s: float = option(8.0, "Code reward: wall-clock budget of all of a sample's tests (and its "
                                  "compilation); tests past it fail. Keep it under `timeout_s`.")
    code_compile_time_s: float = option(20.0, "Code reward: wall-clock limit of compiling a C++ answer.")
    code_memory_mb: int = option(1024, "Code reward: address-space limit of the program (and the compiler).")
    code_output_limit_kb: int = option(1024, "Code reward: stdout / stderr kept per run (the rest is dropped).")
    code_float_tol: float = option(1e-5, "Code reward: numbers in outputs match within tol x max(1, |expected|).")
    # language consistency
    language: str = option("en", "Target language of the chain of thought (a sample's metadata['language'] overrides it).")
    language_unit: str = option("word", "Language share counted over words or characters.", choices=("word", "char"))
    # length
    length_target: int = option(4096, "Length reward: responses longer than this many tokens are penalised linearly.")
    length_bonus: bool = option(False, "Length reward: also give a bonus (up to +1) for responses shorter than the target.")
    max_response_len: int = option(8192, "Overlong reward: the maximum response length in tokens (the rollout's max_new_tokens).")
    overlong_buffer: int = option(1024, "Overlong reward: the penalty ramps from 0 to -1 over the last this-many tokens.")

    def validate(self) -> None:
        from r1mega.rewards.language import LANGUAGES
        from r1mega.rewards.plugins import batch_table, reward_table

        table = reward_table(self.functions)  # imports every plug-in: a bad one fails here, by name
        table.update(batch_table(self.batch_functions, table))
        if not self.weights:
            raise ConfigError("reward.weights is empty; name at least one of: " + ", ".join(sorted(table)))
        for name in self.weights:
            if name not in table:
                raise ConfigError(f"reward.weights: unknown reward {name!r}; valid: {', '.join(sorted(table))} "
                                  f"(or add it under reward.functions)")
        if not self.timeout_s > 0:
            raise ConfigError(f"reward.timeout_s ({self.timeout_s}) must be > 0")
        if self.num_workers < 0:
            raise ConfigError(f"reward.num_workers ({self.num_workers}) must be >= 0")
        if not 0 <= self.math_timeout_s < self.timeout_s:
            raise ConfigError(f"reward.math_timeout_s ({self.math_timeout_s}) must be >= 0 and below "
                              f"reward.timeout_s ({self.timeout_s})")
        for mode in self.extract_order:
            if mode not in EXTRACT_MODES:
                raise ConfigError(f"reward.extract_order: unknown mode {mode!r}; valid: {', '.join(EXTRACT_MODES)}")
        if not self.extract_order:
            raise ConfigError("reward.extract_order is empty")
        if self.language not in LANGUAGES:
            raise ConfigError(f"reward.language ({self.language!r}) is not one of: {', '.join(sorted(LANGUAGES))}")
        if self.length_target < 1:
            raise ConfigError(f"reward.length_target ({self.length_target}) must be >= 1")
        if self.max_response_len < 1 or not 0 <= self.overlong_buffer <= self.max_response_len:
            raise ConfigError(f"reward.overlong_buffer ({self.overlong_buffer}) must be in [0, "
                              f"reward.max_response_len ({self.max_response_len})] and max_response_len >= 1")
        for name in ("code_test_time_s", "code_budget_s", "code_compile_time_s", "code_float_tol"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"reward.{name} ({getattr(self, name)}) must be > 0")
        if self.code_memory_mb < 16 or self.code_output_limit_kb < 1:
            raise ConfigError(f"reward.code_memory_mb ({self.code_memory_mb}) must be >= 16 and "
                              f"reward.code_output_limit_kb ({self.code_output_limit_kb}) >= 1")
        if "code" in self.weights and self.code_budget_s + self.code_compile_time_s >= self.timeout_s \
                and self.num_workers > 0:
            raise ConfigError(f"reward.timeout_s ({self.timeout_s}) must exceed reward.code_budget_s "
                              f"({self.code_budget_s}) + reward.code_compile_time_s ({self.code_compile_time_s}): "
                              "the scorer would cut the code reward off before its own limits")
