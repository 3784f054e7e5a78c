"""The Megatron policy: logprobs and optimizer steps over packed micro-batches.

Forward/backward goes through Megatron's ``get_forward_backward_func`` so every pipeline
layout (none, 1F1B, interleaved) runs the same code. The last stage never materialises
[N, V] logits: the model returns its final hidden states and the LM head is applied by
``r1mega_kernels`` (Triton on GPU, chunked torch on CPU) to the response positions only,
vocab-parallel over TP.

Loss scaling: the loss of one micro-batch is already normalised by the *global* mini-batch
denominator (all micro-batches, all data-parallel ranks), so the sum over everything is
the full-batch loss. Megatron divides each micro-batch loss by the number of micro-batches
and DDP averages gradients over data-parallel ranks; we multiply both factors back in.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from r1mega.config import Config
from r1mega.trainer.batch import MicroBatch
from r1mega.trainer.optim import grads_finite  # noqa: F401  (re-exported: r1mega.trainer.policy.grads_finite)

if TYPE_CHECKING:
    from r1mega.models.arch import ModelArch
    from r1mega.parallel.layout import Layout

# Options the fused kernel implements; anything else takes the unfused path.
_FUSED_OK = dict(kl_estimator="k3", dual_clip=None, tis_cap=None, rollout_is=None)
# Per-token loss statistics a train step reports (token-weighted means over micro-batches and ranks)
_LOSS_STATS = ("pg_loss", "kl", "entropy", "clip_frac", "ratio_mean", "tis_weight_mean", "is_weight_mean",
               "is_masked_frac")


@contextlib.contextmanager
def _hidden_states_only(model):
    """Make the last stage's GPTModel return final hidden states (S, B, H) instead of logits."""
    prev = model.post_process
    model.post_process = False
    try:
        yield prev
    finally:
        model.post_process = prev


def _unwrap(m):
    while hasattr(m, "module"):
        m = m.module
    return m


class Policy:
    """This rank's shard of the policy (and of the frozen reference), with its optimizer."""

    def __init__(self, cfg: Config, layout: Layout, arch: ModelArch, chunks: list, ref_chunks: list | None = None,
                 total_optimizer_steps: int = 1):
        from megatron.core import parallel_state as ps

        from r1mega.trainer.optim import build_optimizer

        self.cfg, self.layout, self.arch = cfg, layout, arch
        # this rank's coordinates, read once from Megatron's groups (built by init_parallel from the layout)
        self.tp_rank, self.dp_rank = ps.get_tensor_model_parallel_rank(), ps.get_data_parallel_rank()
        self.tp_group = ps.get_tensor_model_parallel_group() if layout.tensor > 1 else None
        self.optim = build_optimizer(cfg, chunks, total_optimizer_steps)
        self.chunks, self.optimizer, self.scheduler = self.optim.chunks, self.optim.optimizer, self.optim.scheduler
        self.ref_chunks = ref_chunks
        self.fused = all(getattr(cfg.algorithm, k) == v for k, v in _FUSED_OK.items()) and not (
            cfg.algorithm.kl_coef > 0 and cfg.algorithm.kl_in_reward)
        self.temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
        from r1mega.models.megatron_gpt import have_te
        self._te = have_te()
        # where the model lives: micro-batches are moved there once, when packed
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        # MoE routing replay (r1mega.models.routing_replay): the layers, this rank's sequence slice, the pass's mode
        self.replay = cfg.algorithm.routing_replay
        self.moe_layers = [i for i, moe in enumerate(arch.moe_layers) if moe] if getattr(arch, "is_moe", False) else []
        self._seq_slice = ((self.tp_rank, layout.tensor) if layout.sequence_parallel else (0, 1))
        self._routing_pass: dict = {}

    @property
    def packing(self) -> bool:
        """Whether micro-batches pack several samples per row (``trainer.packing``; auto: only
        where attention can skip the other samples' tokens, i.e. THD on Transformer Engine)."""
        mode = self.cfg.trainer.packing
        return mode == "packed" or (mode == "auto" and self._te)

    def pack(self, samples, pad_id: int = 0) -> list[MicroBatch]:
        """``samples`` as this policy's micro-batches on its device: packed or padded rows
        (``trainer.packing``), and a multiple of the pipeline size under the interleaved schedule."""
        from r1mega.trainer.batch import pack
        return [mb.to(self.device) for mb in pack(samples, self.cfg.trainer.micro_batch_tokens, pad_id=pad_id,
                                                  packed=self.packing,
                                                  multiple_of=self.layout.pipeline if self.layout.virtual_pipeline else 1)]

    # ------------------------------------------------------------------ helpers
    @property
    def modules(self) -> list:
        """The unwrapped model chunks (weight sync, export, checkpoints)."""
        return [_unwrap(c) for c in self.chunks]

    def _head(self, model):
        """This rank's LM-head weight rows for real vocabulary ids, and the first id they hold."""
        m = _unwrap(model)
        w = m.shared_embedding_or_output_weight() if m.share_embeddings_and_output_weights else m.output_layer.weight
        start = self.tp_rank * w.shape[0]
        valid = max(0, min(w.shape[0], self.arch.vocab_size - start))
        return w[:valid], start

    def _attention_args(self, mb: MicroBatch) -> dict:
        """Plain causal attention for padded rows; for a packed row, attention confined to each
        sample: THD ``PackedSeqParams`` on Transformer Engine, a block-diagonal mask otherwise."""
        if mb.segments is None:
            return {"attention_mask": None}
        if self._te:
            from megatron.core.packed_seq_params import PackedSeqParams
            cu = mb.cu_seqlens().to(mb.tokens.device)
            longest = max(mb.segments)
            return {"attention_mask": None, "packed_seq_params": PackedSeqParams(
                qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=longest, max_seqlen_kv=longest)}
        return {"attention_mask": mb.attention_mask().to(mb.tokens.device)}

    def _hidden(self, model, mb: MicroBatch):
        """Run the chunk; on the last stage return the (N, H) hidden states of scored positions."""
        m = _unwrap(model)
        attn = self._attention_args(mb)
        with self._routing(model, mb):
            if not m.post_process:
                return model(mb.tokens, mb.position_ids, **attn), False
            with _hidden_states_only(m):
                h = model(mb.tokens, mb.position_ids, **attn)                    # (S, B, H)
        if self.layout.sequence_parallel:
            from megatron.core.tensor_parallel import gather_from_sequence_parallel_region
            h = gather_from_sequence_parallel_region(h, tensor_parallel_output_grad=False)
        B, T = mb.tokens.shape
        h = h.transpose(0, 1).reshape(B * T, -1)                                 # (B*T, H)
        return h.index_select(0, mb.select), True                                # (N, H)

    @contextlib.contextmanager
    def _routing(self, model, mb: MicroBatch):
        """MoE: set the chunk's routers up for this micro-batch (replay / compare with ``mb.routing``) as
        the current pass asks (``_routing_pass``); after the chunk ran, record their routing if asked (R2)."""
        if not self.moe_layers:
            yield
            return
        from r1mega.models import routing_replay as rr

        p, taps, shape = self._routing_pass, rr.taps_of(model), tuple(mb.tokens.shape)
        sp_rank, sp_size = self._seq_slice
        rr.set_targets(taps, mb.routing, shape, replay=p.get("replay", False), measure=p.get("measure", False),
                       train_pass=p.get("train", False), sp_rank=sp_rank, sp_size=sp_size)
        yield
        if p.get("record"):
            rr.record(taps, mb.routing, shape, sp_rank=sp_rank, sp_size=sp_size)

    @contextlib.contextmanager
    def routing_pass(self, mbs: list[MicroBatch], *, replay: bool = False, measure: bool = False,
                     record: bool = False, train: bool = False):
        """The routing mode of the passes inside: replay ``mb.routing``, count disagreements with it,
        record the routers' own choice into it (allocated here when absent), a training pass."""
        if record:
            k = self.arch.moe_topk
            for mb in mbs:
                if mb.routing is None:
                    B, T = mb.tokens.shape
                    mb.routing = torch.full((B, T, len(self.moe_layers), k), -1, dtype=torch.int16)
        self._routing_pass = dict(replay=replay, measure=measure, record=record, train=train)
        try:
            yield
        finally:
            self._routing_pass = {}
            if self.moe_layers:
                from r1mega.models import routing_replay as rr
                for c in list(self.chunks) + list(self.ref_chunks or []):
                    rr.clear(rr.taps_of(c))

    def routing_stats(self) -> dict[str, float]:
        """MoE: how often the routers disagreed with the recorded routing since the last call
        (r1mega.models.routing_replay.mismatch_stats; collective). {} for dense models."""
        if not self.moe_layers:
            return {}
        from r1mega.models.routing_replay import mismatch_stats
        return mismatch_stats(self.chunks, self.moe_layers)

    def _forward_step(self, mbs: list[MicroBatch], head):
        """A Megatron ``forward_step``: run the chunk; on the last stage, ``head(hidden (N, H),
        lm_head_weight, vocab_start, micro_batch)`` gives the loss of that micro-batch. The queue
        keeps the caller's micro-batch objects (pipeline runs feed padded copies to the model)."""
        queue = list(mbs)

        def forward_step(data_iterator, model):
            h, last = self._hidden(model, next(data_iterator))
            mb = queue.pop(0) if last else None

            def loss_func(out, non_loss_data=False):
                w, start = self._head(model)
                return head(out, w, start, mb), {}

            return h, loss_func

        return forward_step

    def _run(self, chunks, mbs: list[MicroBatch], forward_step, forward_only: bool):
        from megatron.core.pipeline_parallel import get_forward_backward_func

        tp = self.layout.tensor
        if self.layout.sequence_parallel:  # the sequence is split over TP ranks: T a multiple of TP
            mbs = [_pad_to(mb, mb.tokens.shape[0], -(-mb.tokens.shape[1] // tp) * tp) for mb in mbs]
        T = max(mb.tokens.shape[1] for mb in mbs)
        B = max(mb.tokens.shape[0] for mb in mbs)
        if self.layout.pipeline > 1:  # p2p buffers need one shape for every micro-batch
            mbs = [_pad_to(mb, B, T) for mb in mbs]
        its = [iter(mbs) for _ in chunks]
        fb = get_forward_backward_func()
        return fb(forward_step_func=forward_step, data_iterator=its if len(chunks) > 1 else its[0],
                  model=chunks if len(chunks) > 1 else chunks[0], num_microbatches=len(mbs), seq_length=T,
                  micro_batch_size=B, forward_only=forward_only)

    # ------------------------------------------------------------------ logprobs
    @torch.no_grad()
    def logprobs(self, mbs: list[MicroBatch], which: str = "old", temperature: float | None = None) -> None:
        """Fill ``mb.old_logp`` (current policy) or ``mb.ref_logp`` (reference) on the last stage,
        at the rollout temperature unless ``temperature`` is given."""
        from r1mega_kernels import linear_logprob

        chunks = self.chunks if which == "old" else self.ref_chunks
        if chunks is None:
            raise RuntimeError("reference logprobs requested but no reference model was built "
                               "(algorithm.kl_coef is 0)")
        def head(out, w, start, mb):
            logp, _ = linear_logprob(out, w, mb.targets, temperature=temperature or self.temperature,
                                     tp_group=self.tp_group, vocab_start=start,
                                     backend=self.cfg.trainer.logprob_backend,
                                     schedule=self.cfg.trainer.logprob_schedule)
            if which == "old":
                mb.old_logp = logp.float()
            else:
                mb.ref_logp = logp.float()
            return out.new_zeros(())

        forward_step = self._forward_step(mbs, head)
        for c in chunks:
            c.eval()
        # old pass: R3 replays the engine's routing, R2 records its own; both compare with the engine's
        # (when recorded); the reference pass replays whatever the step replays
        mode = (dict(replay=self.replay == "r3", measure=True, record=self.replay == "r2") if which == "old"
                else dict(replay=self.replay != "none"))
        with self.routing_pass(mbs, **mode):
            self._run(chunks, mbs, forward_step, forward_only=True)
        for c in chunks:
            c.train()

    # ------------------------------------------------------------------ train step
    def train_step(self, mbs: list[MicroBatch], denominator: float, max_response_len: int) -> dict[str, float]:
        """One optimizer step over ``mbs`` (this rank's share of one mini-batch)."""
        from r1mega_kernels import linear_grpo_loss, linear_logprob

        a = self.cfg.algorithm
        dp = self.layout.data
        scale = len(mbs) * dp  # undo Megatron's 1/num_microbatches and DDP's 1/dp averaging
        stats_acc: dict[str, float] = {}

        def add(name, value, weight):
            stats_acc[name] = stats_acc.get(name, 0.0) + float(value) * weight

        on_policy = self.cfg.trainer.old_logprob_source() == "current"

        def head(out, w, start, mb):
            old = None if on_policy else mb.old_logp if mb.old_logp is not None else mb.rollout_logp
            ref = mb.ref_logp if a.kl_coef > 0 and not a.kl_in_reward else None
            n = float(mb.mask.sum())
            if self.fused:
                loss, st = linear_grpo_loss(
                    out, w, mb.targets, old_logp=old, advantages=mb.advantages, mask=mb.mask, ref_logp=ref,
                    clip_low=a.clip_low, clip_high=a.clip_high, kl_coef=a.kl_coef if ref is not None else 0.0,
                    entropy_coef=a.entropy_coef, temperature=self.temperature, agg=a.loss_agg,
                    seq_ids=mb.seq_ids, denominator=denominator, max_response_len=max_response_len,
                    tp_group=self.tp_group, vocab_start=start, backend=self.cfg.trainer.logprob_backend)
                for k in _LOSS_STATS:
                    if k in st:
                        add(k, st[k], n)
                logp = st["logp"]
            else:
                loss, logp = self._unfused_loss(out, w, start, mb, old, ref, denominator, max_response_len, add, n)
            if on_policy:  # the logprobs of the policy before this update: the old policy's (parity stats)
                mb.old_logp = logp.detach().float()
            add("loss", loss.detach(), 1.0)
            add("tokens", n, 1.0)
            return loss * scale

        forward_step = self._forward_step(mbs, head)
        # R2/R3 replay the recorded routing; with no old pass this is the step's first look at the batch
        with self.routing_pass(mbs, replay=self.replay != "none", measure=on_policy, train=True):
            return self._optimizer_step(mbs, forward_step, stats_acc)

    def sft_step(self, mbs: list[MicroBatch], denominator: float) -> dict[str, float]:
        """One optimizer step of supervised fine-tuning: -sum(mask * logp) / denominator over the
        scored (response) tokens, ``denominator`` = the global count of masked tokens."""
        from r1mega_kernels import linear_nll_loss

        scale = len(mbs) * self.layout.data
        acc: dict[str, float] = {}

        def head(out, w, start, mb):  # gradients made in the forward pass: no logits recompute
            loss, _ = linear_nll_loss(out, w, mb.targets, mask=mb.mask, denominator=denominator, tp_group=self.tp_group,
                                      vocab_start=start, backend=self.cfg.trainer.logprob_backend)
            acc["loss"] = acc.get("loss", 0.0) + float(loss.detach())
            acc["tokens"] = acc.get("tokens", 0.0) + float(mb.mask.sum())
            return loss * scale

        forward_step = self._forward_step(mbs, head)
        return self._optimizer_step(mbs, forward_step, acc)

    def _optimizer_step(self, mbs: list[MicroBatch], forward_step, acc: dict[str, float]) -> dict[str, float]:
        """Forward/backward over ``mbs`` through the schedule, then one optimizer step, skipped
        (with zeroed gradients) when any gradient is NaN/inf on any rank."""
        self.optim.zero_grad()
        self._run(self.chunks, mbs, forward_step, forward_only=False)  # ends in finalize_model_grads
        applied, grad_norm = self.optim.step()
        stats = self._reduce_stats(acc)
        if getattr(self.arch, "is_moe", False):  # router load balance of this step's passes (collective)
            from r1mega.models.moe import moe_router_stats
            stats.update(moe_router_stats(self.modules))
        stats.update(grad_norm=grad_norm, lr=self.optim.lr, skipped=0.0 if applied else 1.0)
        return stats

    def _unfused_loss(self, h, w, start, mb, old, ref, denominator, max_response_len, add, n):
        """LM head logprobs (+entropy) then r1mega.algorithms.policy_loss on (S, L) padded rows."""
        from r1mega.algorithms import policy_loss
        from r1mega_kernels import linear_logprob

        a = self.cfg.algorithm
        logp, ent = linear_logprob(h, w, mb.targets, temperature=self.temperature, with_entropy=a.entropy_coef > 0,
                                   tp_group=self.tp_group, vocab_start=start,
                                   backend=self.cfg.trainer.logprob_backend,
                                   schedule=self.cfg.trainer.logprob_schedule)
        old = logp.detach() if old is None else old  # on-policy: the old policy is this one (ratio 1)
        _, counts = torch.unique_consecutive(mb.seq_ids, return_counts=True)
        sizes = counts.tolist()

        def rows(x):
            if x is None:
                return None
            return torch.nn.utils.rnn.pad_sequence(list(torch.split(x, sizes)), batch_first=True)  # (S, L)

        mask = rows(mb.mask)
        loss, st = policy_loss(rows(logp), rows(old), rows(mb.advantages), mask, a, ref_logp=rows(ref),
                               entropy=rows(ent), rollout_logp=rows(mb.rollout_logp) if a.tis_cap or a.rollout_is else None,
                               max_response_len=max_response_len, denominator=denominator)
        # pg_loss as a token mean of the clipped PG term (as the fused kernel reports it): policy_loss's
        # own pg_loss is this micro-batch's share of the aggregated loss, which depends on the split
        from r1mega.algorithms.loss import clipped_pg_loss
        pg = clipped_pg_loss(rows(logp).detach(), rows(old), rows(mb.advantages), a.clip_low, a.clip_high,
                             a.dual_clip)[0]
        st["pg_loss"] = (pg * mask).sum() / mask.sum().clamp(min=1)
        for k in _LOSS_STATS:
            if k in st:
                add(k, st[k], n)
        return loss, logp

    def sum_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """Each key summed over every rank, each tensor-parallel group counted once (its ranks hold
        the same numbers). Collective: every rank passes the same keys, in the same order (stages
        other than the last pass zeros)."""
        vec = torch.tensor(list(values.values()), dtype=torch.float64)
        if self.layout.tensor > 1:
            vec /= self.layout.tensor
        dist.all_reduce(vec)
        return dict(zip(values, vec.tolist()))

    def _reduce_stats(self, acc: dict[str, float]) -> dict[str, float]:
        """Token-weighted means over micro-batches, summed from the last stage and all DP ranks."""
        keys = ["loss", "tokens", *_LOSS_STATS]
        sums = self.sum_over_ranks({**{k: acc.get(k, 0.0) for k in keys},
                                    **{f"present:{k}": float(k in acc) for k in keys}})
        out = {}
        tokens = max(sums["tokens"], 1.0)
        for k in keys:
            if sums[f"present:{k}"] > 0 and k not in ("loss", "tokens"):
                out[k] = sums[k] / tokens
        # loss: every DP replica's last stage adds its share of the one global loss
        out["loss"] = sums["loss"]
        out["tokens"] = sums["tokens"]
        return out

    # ------------------------------------------------------------------ stats helpers
    def gather_logp_stats(self, mbs: list[MicroBatch], version: int | None = None) -> dict[str, float]:
        """Mismatch |logp_trainer - logp_rollout| over the scored tokens (reduced to every rank): the
        engine/trainer parity. Tokens a partial rollout generated under an older policy than
        ``version`` are left out of it and reported apart (``logprob_diff_stale_mean``): they differ
        by the policy updates since, not by numerics."""
        acc = torch.zeros(4, dtype=torch.float64)  # fresh sum, fresh count, stale sum, stale count
        m = 0.0
        for mb in mbs:
            if mb.old_logp is None or mb.rollout_logp is None:
                continue
            d = (mb.old_logp - mb.rollout_logp).abs()
            stale = (mb.versions.to(d.device) != version) if mb.versions is not None and version is not None \
                else torch.zeros_like(d, dtype=torch.bool)
            fresh = d[~stale]
            acc += torch.tensor([float(fresh.sum()), fresh.numel(), float(d[stale].sum()), int(stale.sum())],
                                dtype=torch.float64)
            m = max(m, float(fresh.max())) if fresh.numel() else m
        mx = torch.tensor([m], dtype=torch.float64)
        if self.layout.tensor > 1:
            acc /= self.layout.tensor
        dist.all_reduce(acc)
        dist.all_reduce(mx, op=dist.ReduceOp.MAX)
        out = {}
        if acc[1] > 0:
            out.update({"rollout/logprob_diff_mean": acc[0].item() / acc[1].item(), "rollout/logprob_diff_max": mx.item()})
        if acc[3] > 0:
            out["rollout/logprob_diff_stale_mean"] = acc[2].item() / acc[3].item()
        return out


def _pad_to(mb: MicroBatch, B: int, T: int) -> MicroBatch:
    """Pad a micro-batch's token matrix to (B, T) (pipeline p2p needs fixed shapes)."""
    b, t = mb.tokens.shape
    if (b, t) == (B, T):
        return mb
    if mb.segments is not None and B != 1:
        raise ValueError("packed micro-batches are single rows; mixing them with padded ones is not supported")
    dev = mb.tokens.device
    tokens = torch.zeros((B, T), dtype=mb.tokens.dtype, device=dev)
    tokens[:b, :t] = mb.tokens
    position_ids = torch.arange(T, device=dev).unsqueeze(0).expand(B, -1).contiguous()
    position_ids[:b, :t] = mb.position_ids
    rows, cols = mb.select // t, mb.select % t  # flat b*t + j -> b*T + j
    segments = None if mb.segments is None else mb.segments + [T - t]  # the padding is one more segment
    return dataclasses.replace(mb, tokens=tokens, position_ids=position_ids, select=rows * T + cols, segments=segments)
