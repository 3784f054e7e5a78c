"""The config sections owned by the system side: model, parallel, rollout, optimizer, data,
trainer, run. (Algorithm and reward sections live beside their code.)"""

from __future__ import annotations

from dataclasses import dataclass

from r1mega.config.base import ConfigError, option

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class ModelConfig:
    """Which policy model to build and how."""

    hf_path: str | None = option(None, "Hugging Face model directory (config.json + safetensors) to start from.")
    tokenizer_path: str | None = option(None, "Tokenizer directory or sentencepiece .model file; defaults to hf_path.")
    dtype: str = option("float32", "Compute dtype of the trainer.", choices=DTYPES)
    fp8: bool = option(False, "FP8 GEMMs through Transformer Engine (Hopper-class GPU and TE required).")
    recompute: bool = option(False, "Full activation recomputation of each transformer layer.")
    attention: str = option("sdpa", "Core attention of Megatron's local layers (used where Transformer Engine is "
                            "absent): sdpa (torch's fused scaled_dot_product_attention: no S x S score matrix) "
                            "or megatron_local (Megatron's unfused DotProductAttention).",
                            choices=("sdpa", "megatron_local"))
    max_seq_len: int = option(2048, "Longest prompt + response the trainer will see (sets RoPE cache size).")
    rope_theta: float | None = option(None, "Override the RoPE base (long-context training); None keeps the HF value.")

    def validate(self) -> None:
        if self.max_seq_len < 2:
            raise ConfigError(f"model.max_seq_len ({self.max_seq_len}) must be >= 2")


@dataclass(kw_only=True)
class ParallelConfig:
    """How the trainer and the rollout engines are laid out over the world (torchrun ranks).

    world = tensor * pipeline * context * data; experts are split over ``expert`` ranks taken
    from data * context (Megatron's expert-data-parallel folding). The rollout engines use
    ``rollout_tensor`` ranks each; world / rollout_tensor engines run data parallel.
    """

    tensor: int = option(1, "Tensor-parallel size (TP) of the trainer.")
    pipeline: int = option(1, "Pipeline-parallel size (PP) of the trainer.")
    virtual_pipeline: int | None = option(None, "Model chunks per pipeline rank (interleaved 1F1B); None = plain 1F1B.")
    first_stage_layers: int | None = option(None, "Transformer layers on the first pipeline stage when they do not "
                                            "split evenly (e.g. DeepSeek-V3's 61); None = even split. The first "
                                            "stage also holds the embedding, so it often takes fewer.")
    last_stage_layers: int | None = option(None, "Transformer layers on the last pipeline stage (which also holds "
                                           "the LM head and loss); None = even split. The layers left over are "
                                           "split evenly over the middle stages.")
    context: int = option(1, "Context-parallel size (CP) of the trainer.")
    expert: int = option(1, "Expert-parallel size (EP) for MoE layers.")
    expert_tensor: int | None = option(None, "Tensor-parallel size inside experts; None = same as tensor.")
    sequence_parallel: bool = option(False, "Megatron sequence parallelism (needs tensor > 1).")
    rollout_tensor: int = option(1, "Tensor-parallel size of each vLLM rollout engine.")
    rollout_ranks: int = option(0, "Ranks that only generate (rollout.mode=async: the last rollout_ranks torchrun "
                                "ranks each run one vLLM engine; the trainer's layout above is over the other ranks). "
                                "0: the engines are colocated with the trainer on every rank.")
    distributed_optimizer: bool = option(True, "Shard optimizer state over data-parallel ranks (ZeRO-1).")

    def validate(self) -> None:
        if self.rollout_ranks < 0:
            raise ConfigError(f"parallel.rollout_ranks ({self.rollout_ranks}) must be >= 0")
        for name in ("tensor", "pipeline", "context", "expert", "rollout_tensor"):
            v = getattr(self, name)
            if v < 1:
                raise ConfigError(f"parallel.{name} ({v}) must be >= 1")
        if self.sequence_parallel and self.tensor == 1:
            raise ConfigError("parallel.sequence_parallel=true needs parallel.tensor > 1 (got 1)")
        if self.virtual_pipeline is not None and self.pipeline == 1:
            raise ConfigError(f"parallel.virtual_pipeline ({self.virtual_pipeline}) needs parallel.pipeline > 1")
        for name in ("first_stage_layers", "last_stage_layers"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"parallel.{name} ({v}) must be >= 1, or null for an even split")
            if v is not None and self.pipeline == 1:
                raise ConfigError(f"parallel.{name} ({v}) needs parallel.pipeline > 1")

    def model_parallel_size(self) -> int:
        return self.tensor * self.pipeline * self.context

    def data_parallel_size(self, world_size: int) -> int:
        return world_size // self.model_parallel_size()


@dataclass(kw_only=True)
class RolloutConfig:
    """The colocated vLLM engines and their sampling."""

    temperature: float = option(1.0, "Sampling temperature.")
    top_p: float = option(1.0, "Nucleus sampling mass.")
    top_k: int = option(-1, "Top-k sampling (-1 = off).")
    max_new_tokens: int = option(256, "Longest response; longer ones finish with reason 'length'.")
    max_model_len: int | None = option(None, "Engine context length (prompt + response); None = model.max_seq_len.")
    stop: list[str] = option(factory=list, help="Stop strings (need a tokenizer).")
    stop_token_ids: list[int] = option(factory=list, help="Extra stop token ids besides the tokenizer's EOS.")
    seed: int = option(1234, "Engine seed; data-parallel engine d uses seed + d.")
    kv_cache_memory_mb: int | None = option(None, "KV-cache size on CPU (MiB; GPUs use gpu_memory_utilization). None: "
                                            "what one step's sequences can fill (prompts_per_step x group_size x the "
                                            "context length, x2 with mode=partial, +25%, at least 32 MiB; `r1mega "
                                            "generate`: 256 MiB).")
    gpu_memory_utilization: float = option(0.5, "Share of GPU memory vLLM may take (colocated with the trainer).")
    enforce_eager: bool = option(True, "Disable CUDA graphs / torch.compile in the engine.")
    sync_bucket_mb: float = option(64.0, "Weight-sync bucket size (MiB): at most this much is gathered at once.")
    sync_mode: str = option("auto", "Weight-sync path: direct (each rank copies its own shard into its engine; needs "
                            "trainer TP == rollout TP over the same ranks and PP=1), gather (TP gather + PP broadcast "
                            "in buckets), or auto (direct when possible).", choices=("auto", "gather", "direct"))
    allow_stale_policy: bool = option(False, "Allow generating with weights one version behind the trainer.")
    parity_tokens: int = option(256, "Rollout tokens re-scored by the trainer after each sync (0 = off).")
    mode: str = option("sync", "sync: each step generates its prompts' whole responses, then trains on them. partial: "
                       "each step generates at most partial_chunk new tokens per response per round; responses not "
                       "finished by the end of the step wait in a buffer and continue under the next step's weights "
                       "(r1mega.rollout.partial; pays when response lengths have a long tail). async: "
                       "parallel.rollout_ranks ranks generate while the others train, the batch of step n "
                       "generated by a policy at most max_staleness updates older than step n's "
                       "(r1mega.rollout.async_rollout).",
                       choices=("sync", "partial", "async"))
    max_staleness: int = option(1, "Async: how many policy updates the policy that generated a step's batch may lag "
                                "the one it trains (k). 0 is synchronous training on separate ranks; k >= 1 "
                                "overlaps generating batch n + k with training step n.")
    partial_chunk: int = option(64, "Partial rollout: new tokens per unfinished response per generation round.")
    partial_min_groups: float = option(0.75, "Partial rollout: the step generates rounds until this share of "
                                       "data.prompts_per_step groups (all G responses finished) is complete, or "
                                       "nothing is left to generate; it trains on the oldest complete groups, at "
                                       "most data.prompts_per_step. 1.0 waits for every new group: nothing carries "
                                       "over and partial is sync in chunks.")
    partial_max_lag: int | None = option(2, "Partial rollout: the most steps a group may stay in flight. A step does "
                                         "not stop while a group started partial_max_lag or more steps before it "
                                         "is unfinished, so every group is trained at most partial_max_lag steps "
                                         "after it started (and the buffer cannot grow without bound when "
                                         "responses lengthen). 0 is sync in chunks; null: no bound.")
    partial_tokens: str = option("all", "Partial rollout: which response tokens carry loss. all: every token (those "
                                 "of older policy versions corrected by algorithm.rollout_is, if set); current: "
                                 "only the tokens generated by the policy version being trained (older ones get "
                                 "loss mask 0).", choices=("all", "current"))
    return_routed_experts: bool = option(False, "MoE models: the engine records the experts each token went to in "
                                         "each MoE layer (Sample.routed_experts), so that the trainer reports how "
                                         "often its routers disagree (moe/route_mismatch) without replaying them. "
                                         "algorithm.routing_replay=r3 records them whatever this says.")

    def validate(self) -> None:
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"rollout.top_p ({self.top_p}) must be in (0, 1]")
        if self.temperature < 0:
            raise ConfigError(f"rollout.temperature ({self.temperature}) must be >= 0")
        if self.top_k < -1:
            raise ConfigError(f"rollout.top_k ({self.top_k}) must be -1 or 0 (off) or >= 1")
        if self.max_new_tokens < 1:
            raise ConfigError(f"rollout.max_new_tokens ({self.max_new_tokens}) must be >= 1")
        if self.sync_bucket_mb <= 0:
            raise ConfigError(f"rollout.sync_bucket_mb ({self.sync_bucket_mb}) must be > 0")
        if self.max_staleness < 0:
            raise ConfigError(f"rollout.max_staleness ({self.max_staleness}) must be >= 0")
        if self.partial_chunk < 1:
            raise ConfigError(f"rollout.partial_chunk ({self.partial_chunk}) must be >= 1 new token per round")
        if not 0.0 < self.partial_min_groups <= 1.0:
            raise ConfigError(f"rollout.partial_min_groups ({self.partial_min_groups}) must be in (0, 1]: the share "
                              f"of data.prompts_per_step complete groups a partial-rollout step waits for")
        if self.partial_max_lag is not None and self.partial_max_lag < 0:
            raise ConfigError(f"rollout.partial_max_lag ({self.partial_max_lag}) must be >= 0 steps (or null: no bound)")
        if self.kv_cache_memory_mb is not None and self.kv_cache_memory_mb < 1:
            raise ConfigError(f"rollout.kv_cache_memory_mb ({self.kv_cache_memory_mb}) must be >= 1 (or null: sized "
                              f"to the step)")


@dataclass(kw_only=True)
class OptimizerConfig:
    """Adam (or SGD) with warmup and decay, as Megatron's optimizer runs it."""

    name: str = option("adam", "Optimizer: adam (AdamW with weight_decay) or sgd.", choices=("adam", "sgd"))
    momentum: float = option(0.0, "SGD momentum (optimizer.name=sgd).")
    lr: float = option(1e-6, "Peak learning rate.")
    min_lr: float = option(0.0, "Learning rate at the end of the decay.")
    weight_decay: float = option(0.0, "Decoupled weight decay (AdamW).")
    beta1: float = option(0.9, "Adam beta1.")
    beta2: float = option(0.999, "Adam beta2.")
    eps: float = option(1e-8, "Adam epsilon.")
    warmup_steps: int = option(0, "Linear warmup steps (optimizer steps).")
    decay: str = option("constant", "LR schedule after warmup.", choices=("constant", "linear", "cosine"))
    clip_grad: float = option(1.0, "Clip the global gradient norm to this value (0 = off).")

    def validate(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optimizer.lr ({self.lr}) must be > 0")
        if self.min_lr > self.lr:
            raise ConfigError(f"optimizer.min_lr ({self.min_lr}) must be <= optimizer.lr ({self.lr})")


@dataclass(kw_only=True)
class DataConfig:
    """Where prompts come from and how they become token ids."""

    train: str | None = option(None, "Training prompts: a .jsonl/.parquet path, or a `datasets` name.")
    eval: str | None = option(None, "Held-out prompts (same formats).")
    split: str = option("train", "Split to read when `train` is a `datasets` name.")
    question_key: str = option("question", "Field holding the question.")
    answer_key: str = option("answer", "Field holding the reference answer.")
    format: str = option("auto", "Row layout: generic (question_key/answer_key), a benchmark's (gsm8k: answer "
                         "after '####'; math: problem, answer or the solution's last \\boxed{}; aime/amc: "
                         "problem/answer; code: a statement and its tests, scored by the code reward), or auto: picked "
                         "from the first row (r1mega.data.benchmarks).",
                         choices=("auto", "generic", "gsm8k", "math", "aime", "amc", "code"))
    template: str = option("r1_zero", "Prompt template.", choices=("r1_zero", "r1_zero_compact", "chat", "plain"))
    prompts_per_step: int = option(8, "Prompts per RL step across all data-parallel ranks.")
    max_prompt_len: int = option(256, "Prompts longer than this (tokens) are an error.")
    shuffle: bool = option(True, "Shuffle the prompts every epoch (seeded by run.seed).")

    def validate(self) -> None:
        if self.prompts_per_step < 1:
            raise ConfigError(f"data.prompts_per_step ({self.prompts_per_step}) must be >= 1")


@dataclass(kw_only=True)
class TrainerConfig:
    """How one RL batch becomes optimizer steps."""

    micro_batch_tokens: int = option(4096, "Token budget of one packed micro-batch.")
    mini_batches: int = option(1, "Optimizer steps per rollout batch (the batch is split in this many).")
    epochs: int = option(1, "Passes over each rollout batch (PPO epochs).")
    old_logprobs: str = option("auto", "Old-policy logprobs: recompute (a forward pass of the trainer before the "
                               "update), rollout (the engine's), current (one update per batch: the old policy is "
                               "the one being trained, so the loss takes its own detached logprobs, ratio 1, and "
                               "the extra pass is skipped) or auto (current when epochs = mini_batches = 1, else "
                               "recompute).", choices=("auto", "recompute", "rollout", "current"))
    packing: str = option("auto", "Micro-batch rows: packed (several samples per row, attention confined to each "
                          "sample), padded (one length-sorted sample per row), or auto: packed where Transformer "
                          "Engine gives THD attention, padded on CPU (a packed row there costs a dense T x T mask).",
                          choices=("auto", "packed", "padded"))
    logprob_backend: str = option("auto", "LM-head logprob implementation (auto: Triton on GPU, chunked torch on CPU).",
                                  choices=("auto", "triton", "torch_chunked", "eager"))
    logprob_schedule: str = option("fused", "Triton schedule of the LM-head logprob: fused (fused forward kernel, "
                                   "deterministic cuBLAS-chunked backward), gemm (cuBLAS logits chunks and row "
                                   "kernels both ways) or fused_atomic (fused kernels both ways, fp32 atomics). "
                                   "Ignored by the torch backends.", choices=("fused", "gemm", "fused_atomic"))

    def validate(self) -> None:
        if self.micro_batch_tokens < 1:
            raise ConfigError(f"trainer.micro_batch_tokens ({self.micro_batch_tokens}) must be >= 1")
        if self.mini_batches < 1 or self.epochs < 1:
            raise ConfigError(f"trainer.mini_batches ({self.mini_batches}) and trainer.epochs ({self.epochs}) must be >= 1")
        if self.old_logprobs == "current" and self.mini_batches * self.epochs > 1:
            raise ConfigError(f"trainer.old_logprobs 'current' needs one update per batch, but trainer.mini_batches "
                              f"({self.mini_batches}) x trainer.epochs ({self.epochs}) > 1: after the first update the "
                              f"trained policy is no longer the old one; use 'recompute' (or 'auto')")

    def old_logprob_source(self) -> str:
        """``old_logprobs`` with ``auto`` resolved: current, recompute or rollout."""
        if self.old_logprobs == "auto":
            return "current" if self.mini_batches == 1 and self.epochs == 1 else "recompute"
        return self.old_logprobs


@dataclass(kw_only=True)
class RunConfig:
    """Bookkeeping: where outputs go, how long, how often to save and log."""

    name: str = option("r1mega", "Run name (subdirectory of output_dir).")
    output_dir: str = option("runs", "Directory for checkpoints, metrics and plots.")
    steps: int = option(100, "RL steps to run.")
    seed: int = option(1234, "Global seed (data order, init, sampling).")
    save_every: int = option(0, "Checkpoint every N steps (0 = only at the end, and by save_every_minutes).")
    save_every_minutes: float = option(30.0, "Also checkpoint when this many minutes passed since the last "
                                             "save (bounds the work a crash loses; 0 = off). SIGTERM/SIGUSR1 "
                                             "always save at the next step boundary, then exit.")
    keep_last: int = option(2, "Checkpoints kept on disk.")
    resume: str = option("auto", "'auto' (newest valid checkpoint if any), 'never', or a checkpoint path.")
    eval_every: int = option(0, "Evaluate on data.eval every N steps (0 = only at the end).")
    log_every: int = option(1, "Log metrics every N steps.")
    log_rollouts: bool = option(False, "RL: write each step's trained samples (prompt, response, reward, advantage, "
                                "policy version) to run_dir/rollouts/step_NNNNNN.jsonl.")
    tensorboard: bool = option(True, "Write TensorBoard event files.")
    wandb_project: str | None = option(None, "Log to this W&B project (offline unless WANDB_MODE says otherwise).")
    export_hf: bool = option(True, "Export the final policy as a Hugging Face model directory.")
    max_bad_steps: int = option(3, "Consecutive NaN/inf steps tolerated before the run stops.")
    hang_timeout_s: float = option(180.0, "A rank whose heartbeat stops this long (stopped, swapping, stuck device "
                                          "or file system) stops the job with an error naming it, its stage and "
                                          "step, on every rank (exit code 3; 0 = off; multi-process runs only).")
    collective_timeout_s: float = option(600.0, "A collective (gloo or NCCL, Megatron's groups included) that waits "
                                                "this long for a rank fails with each rank's stage and step.")
    deterministic: bool = option(False, "Deterministic algorithms (slower; used by resume tests).")

    def validate(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"run.steps ({self.steps}) must be >= 0")
        if self.keep_last < 1:
            raise ConfigError(f"run.keep_last ({self.keep_last}) must be >= 1")
        if self.save_every_minutes < 0:
            raise ConfigError(f"run.save_every_minutes ({self.save_every_minutes}) must be >= 0 (0 = off)")
        if self.hang_timeout_s < 0:
            raise ConfigError(f"run.hang_timeout_s ({self.hang_timeout_s}) must be >= 0 (0 = off)")
        if not self.collective_timeout_s > 0:
            raise ConfigError(f"run.collective_timeout_s ({self.collective_timeout_s}) must be > 0")


@dataclass(kw_only=True)
class EvalConfig:
    """Held-out evaluation, DeepSeek-R1's protocol: pass@1 over k samples, cons@k, pass@k, greedy accuracy."""

    k: int = option(8, "Samples per held-out prompt (pass@1 is their mean accuracy; cons@k their vote).")
    temperature: float = option(0.6, "Sampling temperature of the k samples (DeepSeek-R1 evaluates at 0.6).")
    top_p: float = option(0.95, "Nucleus sampling mass of the k samples.")
    greedy: bool = option(True, "Also generate one greedy (temperature 0) response per prompt.")
    before_train: bool = option(True, "RL: also evaluate the starting policy before the first step (logged at "
                                "step 0: the baseline of eval.png); skipped when a run resumes.")
    max_prompts: int | None = option(None, "Evaluate on the first N held-out prompts (None: all).")

    def validate(self) -> None:
        if self.k < 1:
            raise ConfigError(f"eval.k ({self.k}) must be >= 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"eval.top_p ({self.top_p}) must be in (0, 1]")


@dataclass(kw_only=True)
class SFTConfig:
    """Supervised fine-tuning data (``r1mega sft``): cold start, rejection-sampling SFT, distillation.

    Rows are either prompt/response pairs or chat ``messages`` (a list of {role, content}); the
    loss is on response (assistant) tokens only. Length: ``max_len`` (default model.max_seq_len).
    """

    train: str | None = option(None, "Training examples: a .jsonl/.json/.parquet path, or a `datasets` name.")
    eval: str | None = option(None, "Held-out examples: their mean response NLL is logged as sft/eval_loss.")
    split: str = option("train", "Split to read when `train` / `eval` is a `datasets` name.")
    format: str = option("auto", "Row format: prompt_response, messages, or auto (messages when the row has "
                         "`messages_key`).", choices=("auto", "prompt_response", "messages"))
    prompt_key: str = option("prompt", "Field holding the prompt (prompt_response rows).")
    response_key: str = option("response", "Field holding the target response (prompt_response rows).")
    messages_key: str = option("messages", "Field holding the chat turns (messages rows).")
    prompt_template: str = option("none", "Template applied to the prompt field: none (used verbatim, e.g. "
                                  "rejection-sampling output), or a data.template name.",
                                  choices=("none", "r1_zero", "r1_zero_compact", "chat", "plain"))
    add_eos: bool = option(True, "Append the tokenizer's EOS to every response (assistant turn).")
    max_len: int | None = option(None, "Longest prompt + response in tokens; None = model.max_seq_len.")
    overlong: str = option("drop", "Examples longer than max_len: drop (counted and logged), truncate the "
                           "response, or error.", choices=("drop", "truncate", "error"))
    examples_per_step: int = option(32, "Examples per optimizer step across all data-parallel ranks.")
    eval_every: int = option(0, "Held-out loss every N steps (0 = only at the end).")

    def validate(self) -> None:
        if self.examples_per_step < 1:
            raise ConfigError(f"sft.examples_per_step ({self.examples_per_step}) must be >= 1")
        if self.max_len is not None and self.max_len < 2:
            raise ConfigError(f"sft.max_len ({self.max_len}) must be >= 2")
