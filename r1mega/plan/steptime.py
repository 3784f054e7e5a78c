"""Seconds per RL step, colocated or disaggregated: a roofline estimate to compare layouts.

Pure Python. Every sample is as long as the config allows (the memory plan's worst case):
B = data.prompts_per_step x algorithm.group_size samples of S_p = data.max_prompt_len prompt and
S_r = rollout.max_new_tokens response tokens, L = S_p + S_r. N = matmul parameters a token passes
through (:func:`matmul_params`), A(c) = attention FLOPs of one token over c positions
(:func:`attention_flops`), F = peak FLOP/s x MFU and M = HBM bytes/s x bw_eff per GPU (:class:`Hardware`).

* train, on n GPUs (:func:`train_flops`): ``B L (2N + A(L/2)) x passes / (n F)``, passes =
  epochs x (3 + 1 if model.recompute) + 1 old-logprob forward (trainer.old_logprobs resolves to
  recompute) + 1 reference forward (algorithm.kl_coef > 0); forward + backward = 3 forwards
  (6N FLOPs per token, Kaplan et al. 2020, arXiv:2001.08361).
* generate, on E engines of r GPUs with K KV-cache tokens each (:func:`generation`; colocated:
  E = world / r, async: E = R / r on the R = ``parallel.rollout_ranks`` GPUs, r =
  ``parallel.rollout_tensor`` either way): an engine
  gets B_e = B / E sequences and runs C = min(B_e, max_num_seqs, floor(K / L)) at once, in
  W = ceil(B_e / C) waves. prefill = ``B_e S_p (2N + A(S_p/2)) / (r F)``; decode = ``W x S_r``
  steps of ``max(bytes / M, 2 N C / (r F))``, bytes = the engine's weights on one GPU + the KV
  cache of C sequences at the mean context S_p + S_r/2 (every decode step reads both).
* transfer (async, :func:`transfer_seconds`): the whole model in ``model.dtype`` broadcast from
  trainer rank 0 to the R rollout ranks, ``bytes / (link x bw_eff)`` (NCCL pipelines a broadcast:
  about one pass over the slowest link, whatever R); link = NVLink when the job is one node,
  else the inter-node NIC.
* sync (colocated, :func:`sync_seconds`): direct (each GPU copies its own shard: engine bytes /
  M) or gather (each GPU receives the whole model from its model-parallel group: bytes / link,
  NVLink when TP (or EP x expert-TP) x PP fits in a node); sleep/wake: the engine's weights to the
  host and back, ``2 x engine bytes / (PCIe x bw_eff)``.

Step (:attr:`StepTime.total`): colocated (rollout.mode sync, and partial, estimated as sync) =
generate + train + sync + sleep/wake; async with k = rollout.max_staleness >= 1 =
max(generate, train) + transfer (steady state: batch n + k is generated while step n trains; both
sides take part in the broadcast); async k = 0 = generate + train + transfer (nothing overlaps).

Not modelled: pipeline bubbles, gradient all-reduces and uneven lengths (in the MFU, or not at
all), tensor-parallel all-reduces in decode, rewards, vLLM's prefix caching of a prompt's G
samples, the gather onto trainer rank 0 before the broadcast, and the step-time jitter that a
larger k absorbs (here k > 1 is k = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from r1mega.plan.estimate import DTYPE_BYTES, disaggregated, engine_weight_bytes, kv_bytes_per_token, \
    vllm_batch_defaults


@dataclass(frozen=True)
class Hardware:
    """Per-GPU speeds (defaults: H100 SXM). Bandwidths are peaks, of which ``bw_eff`` is reached."""

    tflops: float = 989.0        # dense bf16/fp16 tensor-core peak, TFLOP/s (H100 and H200 SXM)
    mfu: float = 0.4             # share of that peak training and prefill reach
    hbm_tbps: float = 3.35       # HBM bandwidth, TB/s (H100 SXM; H200: 4.8)
    nvlink_gbps: float = 450.0   # NVLink 4, GB/s per GPU per direction
    nic_gbps: float = 50.0       # inter-node, GB/s per GPU (one 400 Gb/s InfiniBand NDR / RoCE NIC)
    pcie_gbps: float = 64.0      # PCIe Gen5 x16, GB/s per direction (the engine's sleep / wake)
    bw_eff: float = 0.8          # share of any bandwidth reached

    @property
    def flops(self) -> float:
        """F: reached FLOP/s."""
        return self.tflops * 1e12 * self.mfu

    @property
    def hbm(self) -> float:
        """M: reached HBM bytes/s."""
        return self.hbm_tbps * 1e12 * self.bw_eff

    def link(self, cross_node: bool) -> tuple[float, str]:
        """(reached bytes/s, name) of the GPU-to-GPU link."""
        gbps, name = (self.nic_gbps, "the inter-node NIC") if cross_node else (self.nvlink_gbps, "NVLink")
        return gbps * 1e9 * self.bw_eff, name

    def describe(self) -> str:
        return (f"{self.tflops:g} TFLOP/s peak x MFU {self.mfu:g}; HBM {self.hbm_tbps:g} TB/s, NVLink "
                f"{self.nvlink_gbps:g} GB/s, NIC {self.nic_gbps:g} GB/s, PCIe {self.pcie_gbps:g} GB/s, "
                f"x {self.bw_eff:g} reached")


def default_hardware(gpu_mem_gb: float, **given) -> Hardware:
    """H100 SXM speeds; HBM 4.8 TB/s (H200) when the GPU has >= 130 GiB. ``given`` (not None) wins."""
    defaults = {"hbm_tbps": 4.8} if gpu_mem_gb >= 130 else {}
    return Hardware(**{**defaults, **{k: v for k, v in given.items() if v is not None}})


# ---------------------------------------------------------------------------- FLOPs
def matmul_params(spec, counts) -> float:
    """N: the active parameters less the input embedding (a lookup), plus the output layer V x h
    (a matmul even when tied to the embedding)."""
    return counts.active - counts.embedding - counts.lm_head + spec.vocab_size * spec.hidden_size


def attention_flops(spec, ctx: float) -> float:
    """A(c): one token's attention over c positions, all layers: QK^T ``2 a d_qk c`` + AV ``2 a d_v c``
    per layer (MLA: d_qk = nope + rope head dims, d_v = value head dim)."""
    d_qk = spec.qk_nope_head_dim + spec.qk_rope_head_dim if spec.is_mla else spec.head_dim
    d_v = spec.v_head_dim if spec.is_mla else spec.head_dim
    return 2 * spec.num_layers * spec.num_heads * (d_qk + d_v) * ctx


def train_passes(cfg) -> int:
    """Forward-pass equivalents per sample: epochs x (3 + recompute) + old logprobs + reference."""
    return (cfg.trainer.epochs * (3 + int(cfg.model.recompute))
            + int(cfg.trainer.old_logprob_source() == "recompute") + int(cfg.algorithm.kl_coef > 0))


def train_flops(cfg, spec, counts) -> float:
    """``B L (2N + A(L/2)) x passes``: one step's training FLOPs."""
    L = cfg.data.max_prompt_len + cfg.rollout.max_new_tokens
    B = cfg.data.prompts_per_step * cfg.algorithm.group_size
    return B * L * (2 * matmul_params(spec, counts) + attention_flops(spec, L / 2)) * train_passes(cfg)


# ---------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Generation:
    """One step's generation on ``engines`` engines of ``tensor`` GPUs each (seconds per engine,
    all engines in parallel)."""

    engines: int
    tensor: int
    per_engine: int          # B_e sequences
    concurrent: int          # C at once (0: the KV cache holds no full-length sequence)
    waves: int               # W
    kv_tokens: float         # K per engine
    prefill: float
    decode: float

    @property
    def seconds(self) -> float:
        return self.prefill + self.decode


def generation(cfg, spec, counts, *, engines: int, tensor: int, kv_tokens: float, gpu_bytes: float,
               hw: Hardware) -> Generation:
    """prefill ``B_e S_p (2N + A(S_p/2)) / (r F)`` + decode ``W S_r max(bytes / M, 2 N C / (r F))``
    (see the module docstring); decode is infinite when no full-length sequence fits (C = 0)."""
    b = DTYPE_BYTES[cfg.model.dtype]
    Sp, Sr = cfg.data.max_prompt_len, cfg.rollout.max_new_tokens
    per_engine = cfg.data.prompts_per_step * cfg.algorithm.group_size // engines
    C = min(per_engine, vllm_batch_defaults(gpu_bytes)[1], int(kv_tokens // (Sp + Sr)))
    N = matmul_params(spec, counts)
    prefill = per_engine * Sp * (2 * N + attention_flops(spec, Sp / 2)) / (tensor * hw.flops)
    if C < 1:
        return Generation(engines, tensor, per_engine, 0, 0, kv_tokens, prefill, math.inf)
    waves = math.ceil(per_engine / C)
    read = engine_weight_bytes(spec, counts, tensor, b) + C * (Sp + Sr / 2) * kv_bytes_per_token(spec, tensor, b)
    step = max(read / hw.hbm, 2 * N * C / (tensor * hw.flops))
    return Generation(engines, tensor, per_engine, C, waves, kv_tokens, prefill, waves * Sr * step)


# ---------------------------------------------------------------------------- weights
def transfer_seconds(cfg, counts, *, world: int, gpus_per_node: int, hw: Hardware) -> tuple[float, str]:
    """Async: the whole model in ``model.dtype`` broadcast from trainer rank 0 (on node 0) to the
    last R ranks, ``bytes / link``; the link crosses nodes when the job has more than one."""
    nbytes = counts.total * DTYPE_BYTES[cfg.model.dtype]
    bw, name = hw.link(world > gpus_per_node)
    return nbytes / bw, f"broadcast of {nbytes / 1e9:.2f} GB ({cfg.model.dtype}) from trainer rank 0 over {name}"


def sync_direct(cfg, spec, layout) -> bool:
    """Whether the colocated sync takes the direct path (r1mega.rollout.shard_sync): trainer TP ==
    rollout TP, PP 1, a dense model, and rollout.sync_mode is not gather."""
    return (cfg.rollout.sync_mode != "gather" and layout.tensor == layout.rollout_tensor and layout.pipeline == 1
            and not spec.is_moe)


def sync_seconds(cfg, spec, counts, layout, *, gpus_per_node: int, hw: Hardware) -> tuple[float, float, str]:
    """Colocated: (weight sync, engine sleep + wake, note). Direct: engine bytes / M; gather: the whole
    model / link. Sleep + wake: ``2 x engine bytes / PCIe``."""
    b = DTYPE_BYTES[cfg.model.dtype]
    engine = engine_weight_bytes(spec, counts, layout.rollout_tensor, b)
    sleep_wake = 2 * engine / (hw.pcie_gbps * 1e9 * hw.bw_eff)
    if sync_direct(cfg, spec, layout):
        return engine / hw.hbm, sleep_wake, f"direct: each GPU copies its {engine / 1e9:.2f} GB shard"
    group = max(layout.tensor, layout.expert * layout.expert_tensor) * layout.pipeline
    bw, name = hw.link(group > gpus_per_node)
    nbytes = counts.total * b
    return nbytes / bw, sleep_wake, f"gather: each GPU receives {nbytes / 1e9:.2f} GB over {name}"


# ---------------------------------------------------------------------------- the step
@dataclass
class StepTime:
    """Seconds of one RL step; :attr:`total` combines them by mode (module docstring)."""

    mode: str                       # "colocated" or "async"
    world: int                      # GPUs in the job
    generate: Generation
    train: float
    train_flops: float
    train_gpus: int
    transfer: float                 # async: the broadcast; colocated: the weight sync
    transfer_note: str
    sleep_wake: float = 0.0         # colocated only
    staleness: int = 0              # async: k
    colocated: StepTime | None = None   # async: the colocated sync layout on the same GPUs
    colocated_note: str = ""            # why that is missing, or that it does not fit in memory
    hw: Hardware = Hardware()           # the speeds assumed

    @property
    def overlapped(self) -> bool:
        return self.mode == "async" and self.staleness >= 1

    @property
    def total(self) -> float:
        if self.overlapped:
            return max(self.generate.seconds, self.train) + self.transfer
        return self.generate.seconds + self.train + self.transfer + self.sleep_wake

    @property
    def formula(self) -> str:
        if self.overlapped:
            return f"async, k={self.staleness}: max(generate, train) + transfer"
        if self.mode == "async":
            return "async, k=0: generate + train + transfer (no overlap)"
        return "colocated: generate + train + sync + sleep/wake"


def step_time(cfg, spec, plan, hw: Hardware) -> StepTime:
    """The step time of ``plan`` (a MemoryPlan of ``cfg``: its layout, GPU size and KV cache)."""
    counts, lay, gpn = plan.counts, plan.layout, plan.gpus_per_node
    flops = train_flops(cfg, spec, counts)
    train = flops / (lay.world_size * hw.flops)
    if disaggregated(cfg):
        t = cfg.parallel.rollout_tensor       # R / t engines of t rollout GPUs; kv_tokens is per engine
        gen = generation(cfg, spec, counts, engines=cfg.parallel.rollout_ranks // t, tensor=t,
                         kv_tokens=plan.rollout_gpu.info["kv_tokens"], gpu_bytes=plan.gpu_bytes, hw=hw)
        sec, note = transfer_seconds(cfg, counts, world=plan.world_size, gpus_per_node=gpn, hw=hw)
        return StepTime("async", plan.world_size, gen, train, flops, lay.world_size, sec, note,
                        staleness=cfg.rollout.max_staleness, hw=hw)
    gen = generation(cfg, spec, counts, engines=lay.rollout_data, tensor=lay.rollout_tensor,
                     kv_tokens=plan.info["kv_tokens"], gpu_bytes=plan.gpu_bytes, hw=hw)
    sec, sleep_wake, note = sync_seconds(cfg, spec, counts, lay, gpus_per_node=gpn, hw=hw)
    return StepTime("colocated", plan.world_size, gen, train, flops, lay.world_size, sec, note, sleep_wake=sleep_wake,
                    hw=hw)
