"""Weight sync: the trainer's new policy weights -> the colocated vLLM engine, bucket by bucket.

This is the *gather* path: it serves every trainer/rollout layout. When the trainer's TP group
is the engine's (and PP = 1), :mod:`r1mega.rollout.shard_sync` skips the gather and copies each
rank's own shard into its vLLM shard; its ``sync_policy`` picks the path (same contract).

Contract
--------
*When*: once per RL step, after the optimizer step and before the next rollout, on every rank
at the same time (SPMD). The weights iterator is usually produced collectively by the trainer
(``r1mega.models.hf_io.iter_hf_weights``: gathers TP/PP/EP shards into full Hugging Face-named
tensors), so every rank must call :meth:`WeightSync.push` with the same sequence of names. On
GPU the engine's weights must be awake (``engine.wake_up(["weights"])``); its KV cache may
still be asleep.

*What it guarantees*: when ``push(weights, version=N)`` returns, the engine holds exactly the
tensors it was given (converted to the engine's dtype and re-sharded by vLLM's loaders for the
rollout TP size), its prefix cache is empty (no KV computed with older weights survives), and
its policy version is N, so every sample generated afterwards carries ``policy_version == N``
and was produced by those weights. If the iterator raises, or names the engine does not know,
or leaves out a checkpoint tensor, the engine's weights are undefined: its version becomes
``None`` and it refuses to generate until a later push succeeds.

*Memory*: the iterator is consumed lazily. Tensors are grouped into buckets of at most
``bucket_bytes`` and the next bucket is not pulled from the iterator before the previous one
has been handed over and released. Rule: a tensor that would overflow the current bucket
closes it (and is held as the one lookahead while that bucket is handed over); a single tensor
larger than ``bucket_bytes`` travels alone. So a bucket never holds more than
``max(bucket_bytes, largest tensor)`` and the bytes held at any time (bucket + lookahead)
never exceed ``bucket_bytes + largest tensor``, whatever the model size;
:attr:`SyncStats.peak_bucket_bytes` measures the latter. (vLLM's layer-wise reload
additionally keeps the checkpoint tensors of a fused vLLM module, e.g. q/k/v -> ``qkv_proj``,
until the module is complete: at most one module's worth more when the iterator follows the
checkpoint's order.)

How the buckets reach vLLM
--------------------------
vLLM 0.32's ``reload_weights(weights_iterator, is_checkpoint_format=True)`` (worker method,
reached with ``llm.collective_rpc``) puts every layer's parameters on the meta device first,
buffers the incoming tensors per layer, and at the end finalises: layers that received no
tensors get their old values back, but a layer that received only *some* of its tensors is
processed half-empty. Calling it once per bucket would therefore corrupt any fused module
whose tensors straddle a bucket boundary. So it is called **once per sync** with a generator
that yields bucket after bucket; the engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
external_launcher or uni executor), so the generator is consumed lazily by vLLM's loader.
After it, ``llm.reset_prefix_cache()``: without it, cached KV of earlier prompts computed with
the old weights is reused (measured logprob errors of ~3).

One more step is needed for tied weights: a module that *shares* a parameter with a reloaded
one but receives no tensor itself (the tied ``lm_head`` of Qwen2-0.5B-style models, which
vLLM skips when loading) keeps whatever it derived from the old values in
``process_weights_after_loading``. On CPU that is a prepacked oneDNN/SGL copy of the weight,
so the logits silently kept the old embedding (measured logprob errors of ~1.7).
:func:`refresh_shared_modules` re-runs that processing for every module whose parameter is
shared with another module.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

WeightIter = Iterable[tuple[str, torch.Tensor]]


@dataclass
class SyncStats:
    """What one :meth:`WeightSync.push` moved and held."""

    version: int
    num_tensors: int = 0
    total_bytes: int = 0
    num_buckets: int = 0
    peak_bucket_bytes: int = 0
    """Most bytes held at once (bucket + lookahead tensor): <= bucket_bytes + max_tensor_bytes."""
    max_tensor_bytes: int = 0
    bucket_bytes: int = 0
    seconds: float = 0.0
    path: str = "gather"
    """Which path ran: ``gather`` (full HF tensors through vLLM's loaders, this module) or
    ``direct`` (each rank's own shard into its vLLM shard, :mod:`r1mega.rollout.shard_sync`)."""
    exchanged_bytes: int = 0
    """Direct path: bytes this rank sent plus received (vocab rows across shard boundaries).
    Not measured on the gather path (0 there): its all-gathers move every TP-split tensor."""

    def as_metrics(self, prefix: str = "weight_sync/") -> dict[str, float]:
        """Numeric fields as floats; ``path`` becomes ``{prefix}direct`` (1.0 or 0.0)."""
        out = {f"{prefix}{k}": float(v) for k, v in vars(self).items() if k != "path"}
        out[f"{prefix}direct"] = float(self.path == "direct")
        return out


def tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def iter_buckets(weights: WeightIter, bucket_bytes: int,
                 stats: SyncStats | None = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group ``(name, tensor)`` pairs into lists of at most ``bucket_bytes`` (module rule).

    Pulls from ``weights`` only as far as needed to close the bucket it yields: the tensor
    that overflows a bucket is the one lookahead held while that bucket is handed over.
    ``stats`` (optional) records buckets, bytes and the peak bytes held (bucket + lookahead).
    """
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes ({bucket_bytes}) must be > 0")
    stats = stats if stats is not None else SyncStats(version=-1)
    bucket: list[tuple[str, torch.Tensor]] = []
    held = 0
    for name, t in weights:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"weight {name!r}: expected a torch.Tensor, got {type(t).__name__}")
        size = tensor_bytes(t)
        stats.peak_bucket_bytes = max(stats.peak_bucket_bytes, held + size)
        stats.num_tensors += 1
        stats.total_bytes += size
        stats.max_tensor_bytes = max(stats.max_tensor_bytes, size)
        if bucket and held + size > bucket_bytes:
            stats.num_buckets += 1
            yield bucket
            bucket, held = [], 0
        bucket.append((name, t.detach()))
        del t
        held += size
    if bucket:
        stats.num_buckets += 1
        yield bucket


def refresh_shared_modules(worker) -> int:
    """Worker-side (``llm.collective_rpc``): re-process modules holding a shared parameter.

    Returns how many modules were refreshed. Harmless where processing derives nothing
    (GPU unquantized layers).
    """
    model = worker.model_runner.get_model()
    owners: dict[int, list[torch.nn.Module]] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners.setdefault(id(p), []).append(module)
    refreshed = 0
    for modules in owners.values():
        if len(modules) < 2:
            continue
        for module in modules:
            method = getattr(module, "quant_method", None)
            if method is not None and hasattr(method, "process_weights_after_loading"):
                method.process_weights_after_loading(module)
                refreshed += 1
    return refreshed


class WeightSync:
    """Streams full HF-named tensors into an in-process vLLM ``LLM`` (see the module contract).

    ``expected_names``: the checkpoint tensor names a complete sync must contain (default:
    none checked). :class:`~r1mega.rollout.engine.RolloutEngine` passes the names of its
    model directory's safetensors, so a sync that silently leaves a tensor at its old value
    is an error.
    """

    def __init__(self, llm, bucket_bytes: int, expected_names: Iterable[str] = ()):
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes ({bucket_bytes}) must be > 0")
        self.llm = llm
        self.bucket_bytes = int(bucket_bytes)
        self.expected_names = frozenset(expected_names)
        self.last: SyncStats | None = None

    def _stream(self, weights: WeightIter, stats: SyncStats, seen: set[str]):
        """The lazy generator vLLM's loader consumes: bucket by bucket, releasing each."""
        for bucket in iter_buckets(weights, stats.bucket_bytes, stats):
            seen.update(name for name, _ in bucket)
            while bucket:  # hand over in order, dropping our reference as we go
                yield bucket.pop(0)
            del bucket

    def push(self, weights: WeightIter, version: int, bucket_bytes: int | None = None) -> SyncStats:
        """Load ``weights`` (an iterator of ``(hf_name, full_tensor)``) as policy ``version``.

        ``bucket_bytes``: this push's bucket size (None = the one given at construction).
        Raises ``RuntimeError`` (engine weights undefined afterwards) if loading fails or the
        sync misses any of ``expected_names``.
        """
        bucket_bytes = self.bucket_bytes if bucket_bytes is None else int(bucket_bytes)
        if bucket_bytes <= 0:
            raise ValueError(f"bucket_bytes ({bucket_bytes}) must be > 0")
        stats = SyncStats(version=version, bucket_bytes=bucket_bytes)
        seen: set[str] = set()
        start = time.perf_counter()
        try:
            self.llm.collective_rpc("reload_weights", kwargs=dict(
                weights_iterator=self._stream(weights, stats, seen), is_checkpoint_format=True))
            self.llm.collective_rpc(refresh_shared_modules)
        except Exception as e:
            raise RuntimeError(f"weight sync to policy version {version} failed after "
                               f"{stats.num_tensors} tensors; engine weights are undefined") from e
        finally:
            self.llm.reset_prefix_cache()
        missing = self.expected_names - seen
        if missing:
            raise RuntimeError(f"weight sync to policy version {version} left out {len(missing)} "
                               f"checkpoint tensor(s), e.g. {sorted(missing)[:5]}; engine weights "
                               "are a mix of versions")
        stats.seconds = time.perf_counter() - start
        self.last = stats
        return stats
