"""The reward model: r1mega's Megatron GPT trunk + a scalar value head at the last token.

    r(x) = w . h_L(x)[last] + b        h_L: final-normed hidden state, w: (H,), b: scalar (fp32)

The trunk is the same Megatron-Core ``GPTModel`` the policy uses (built from an HF causal-LM
directory by :mod:`r1mega.models`), so every TP/PP layout the policy supports works here. The
hidden states come from the last pipeline stage with ``GPTModel.post_process`` set to False for
the call: ``GPTModel.forward`` then returns the decoder output before the output layer. The
final RMSNorm is still applied: it belongs to the ``TransformerBlock``, which decides at build
time (``has_final_layernorm_in_this_stage``: its own ``post_process``) and is not affected by the
model's flag (megatron-core 0.16.1, transformer_block.py; checked against HF ``last_hidden_state``
in tests/test_reward_model.py). The LM head is unused: an untied ``output_layer`` is frozen (not
in the optimizer, exported unchanged); a tied one is the embedding, which trains as usual.

The value head is an fp32 ``Linear(H, 1)`` attached to the last stage's model chunk as
``value_head``, so Megatron's DDP and optimizer own it like any replicated (non-TP) parameter.
It sits after the TP-replicated final norm (under sequence parallelism, after gathering the
sequence), so its input, output and gradients are identical on every TP rank; it is
initialised from a seeded generator, identical on every rank. On disk (see :func:`save_reward_model`):

    DIR/config.json, model*.safetensors   the trunk, an HF causal-LM directory (export_hf)
    DIR/value_head.safetensors            "weight" (1, H) and "bias" (1,), fp32
    DIR/reward_model.json                 metadata (written last: the directory is complete)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from r1mega.config.base import ConfigError
from r1mega.config.sections import ModelConfig

META_FILE = "reward_model.json"
HEAD_FILE = "value_head.safetensors"
FORMAT = "r1mega-reward-model"
VERSION = 1


class ValueHead(torch.nn.Module):
    """``Linear(H, 1)`` in fp32: (N, H) hidden states -> (N,) rewards."""

    def __init__(self, hidden_size: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        # std 1/sqrt(H): the final RMSNorm output has entries of size ~1, so initial rewards are ~N(0, 1).
        self.weight = torch.nn.Parameter(torch.randn(1, hidden_size, generator=g) / hidden_size ** 0.5)
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(h.float(), self.weight, self.bias).squeeze(-1)  # (N,)


@dataclass(kw_only=True)
class RewardModelMeta:
    """What ``reward_model.json`` records besides the weights."""

    format: str = FORMAT
    version: int = VERSION
    hidden_size: int
    vocab_size: int
    max_seq_len: int = 2048
    """Longest prompt + response the model was trained for (the scorer's default limit)."""
    append_eos: bool = True
    """Training responses ended with EOS (score finished rollouts, which end with their stop token)."""
    eos_id: int | None = None
    score_mean: float = 0.0
    """Mean reward over training responses after training (:class:`RewardModelScorer` ``normalize``)."""
    score_std: float = 1.0
    steps: int = 0
    eval_accuracy: float | None = None
    base_model: str | None = None

    @classmethod
    def read(cls, path: str) -> "RewardModelMeta":
        file = os.path.join(path, META_FILE)
        if not os.path.isfile(file):
            raise ConfigError(f"{path}: not an r1mega reward model directory (no {META_FILE}); expected the "
                              f"output of `r1mega train-rm` or save_reward_model")
        with open(file) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{file}: not valid JSON ({e})") from None
        if data.get("format") != FORMAT:
            raise ConfigError(f"{file}: format is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("version", 0) > VERSION:
            raise ConfigError(f"{file}: version {data.get('version')} is newer than this r1mega reads ({VERSION})")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{file}: unknown keys {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"{file}: {e}") from None


def unwrap(m):
    while hasattr(m, "module"):
        m = m.module
    return m


@contextlib.contextmanager
def hidden_states_only(model):
    """The last stage's GPTModel returns final-normed hidden states (T, B, H) instead of logits."""
    prev = model.post_process
    model.post_process = False
    try:
        yield
    finally:
        model.post_process = prev


class RewardModel:
    """This rank's shard of a reward model: the trunk's model chunks (the last stage's last chunk
    carries ``value_head``), the trunk architecture, and its metadata."""

    def __init__(self, chunks: list, arch, layout, meta: RewardModelMeta):
        self.chunks, self.arch, self.layout, self.meta = chunks, arch, layout, meta

    @property
    def head(self) -> ValueHead | None:
        """The value head on the last pipeline stage, None elsewhere."""
        last = self.chunks[-1]
        return getattr(last, "value_head", None)

    @contextlib.contextmanager
    def trunk_only(self):
        """Detach the value head for the duration (HF export knows only the trunk's parameters)."""
        last = self.chunks[-1]
        head = last._modules.pop("value_head", None)
        try:
            yield self.chunks
        finally:
            if head is not None:
                last._modules["value_head"] = head


# ------------------------------------------------------------------------------------ building
def layout_for(arch, layout):
    """``layout`` checked against the reward model's architecture, with the vocab padding of *its*
    vocabulary (the policy's layout pads the policy's vocab)."""
    from r1mega.config.sections import ParallelConfig
    from r1mega.parallel.layout import check_layout

    if layout.context > 1:
        raise ConfigError(f"reward model: parallel.context ({layout.context}) > 1 is not supported (the reward is "
                          f"read at each sequence's last token, which context parallelism splits off); use 1")
    p = ParallelConfig(tensor=layout.tensor, pipeline=layout.pipeline, virtual_pipeline=layout.virtual_pipeline,
                       context=layout.context, sequence_parallel=layout.sequence_parallel,
                       distributed_optimizer=False)
    checked = check_layout(p, layout.world_size, arch)
    return dataclasses.replace(layout, padded_vocab_size=checked.padded_vocab_size)


def _attach_head(chunks: list, arch, seed: int) -> None:
    last = chunks[-1]
    if not last.post_process:
        return
    last.value_head = ValueHead(arch.hidden_size, seed)
    if not last.share_embeddings_and_output_weights:
        last.output_layer.weight.requires_grad_(False)  # the LM head is not part of the reward model


def build_reward_model(hf_path: str, layout, model_cfg: ModelConfig | None = None, *, seed: int = 0) -> RewardModel:
    """A new reward model: trunk loaded from the HF causal-LM directory ``hf_path``, fresh value head.
    Needs the parallel state (``r1mega.parallel.init.init_parallel``)."""
    from r1mega.models import load_hf, read_hf_config

    model_cfg = model_cfg or ModelConfig()
    arch = read_hf_config(hf_path)
    layout = layout_for(arch, layout)
    chunks, arch = load_hf(hf_path, model_cfg, layout)
    _attach_head(chunks, arch, seed)
    eos = arch.eos_token_id[0] if isinstance(arch.eos_token_id, list) else arch.eos_token_id
    meta = RewardModelMeta(hidden_size=arch.hidden_size, vocab_size=arch.vocab_size,
                           max_seq_len=model_cfg.max_seq_len, eos_id=eos, base_model=os.path.abspath(hf_path))
    return RewardModel(chunks, arch, layout, meta)


def load_reward_model(path: str, layout, *, dtype: str = "float32", max_seq_len: int | None = None) -> RewardModel:
    """Build this rank's shard of the reward model saved at ``path``, at the current parallel layout
    (any TP/PP: the trunk is resharded from its HF export; the head is replicated)."""
    from safetensors.torch import load_file

    meta = RewardModelMeta.read(path)
    model_cfg = ModelConfig(hf_path=path, dtype=dtype, max_seq_len=max_seq_len or meta.max_seq_len)
    rm = build_reward_model(path, layout, model_cfg)
    rm.meta = dataclasses.replace(meta, max_seq_len=model_cfg.max_seq_len)
    if rm.arch.hidden_size != meta.hidden_size or rm.arch.vocab_size != meta.vocab_size:
        raise ConfigError(f"{path}: {META_FILE} says hidden_size {meta.hidden_size}, vocab_size {meta.vocab_size}; "
                          f"config.json says {rm.arch.hidden_size}, {rm.arch.vocab_size}")
    if rm.head is not None:
        file = os.path.join(path, HEAD_FILE)
        if not os.path.isfile(file):
            raise ConfigError(f"{path}: missing {HEAD_FILE}")
        state = load_file(file)
        want = {"weight": (1, meta.hidden_size), "bias": (1,)}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            raise ConfigError(f"{file}: tensors {got}, expected {want}")
        with torch.no_grad():
            rm.head.weight.copy_(state["weight"].float())
            rm.head.bias.copy_(state["bias"].float())
    return rm


def value_head_state(rm: RewardModel) -> dict[str, torch.Tensor] | None:
    """The value head's tensors ``{"weight", "bias"}`` on global rank 0, None elsewhere (collective:
    broadcast from the last pipeline stage)."""
    from megatron.core import parallel_state as ps

    H = rm.arch.hidden_size
    if rm.head is not None:
        w, b = rm.head.weight.detach().float().clone(), rm.head.bias.detach().float().clone()
    else:
        w, b = torch.empty(1, H), torch.empty(1)
    pp = ps.get_pipeline_model_parallel_world_size()
    if pp > 1:
        group = ps.get_pipeline_model_parallel_group()
        src = dist.get_global_rank(group, pp - 1)
        for t in (w, b):
            dist.broadcast(t, src=src, group=group)
    return {"weight": w.contiguous(), "bias": b.contiguous()} if dist.get_rank() == 0 else None


def save_reward_model(rm: RewardModel, out_dir: str, tokenizer_dir: str | None = None) -> str:
    """Collective: every rank calls it; global rank 0 writes ``out_dir`` (replaced if it exists)."""
    from safetensors.torch import save_file

    from r1mega.models import export_hf

    with rm.trunk_only() as chunks:
        export_hf(chunks, rm.arch, out_dir, tokenizer_dir=tokenizer_dir)
    head = value_head_state(rm)
    if head is not None:
        save_file(head, os.path.join(out_dir, HEAD_FILE), metadata={"format": "pt"})
        tmp = os.path.join(out_dir, META_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump(dataclasses.asdict(rm.meta), f, indent=2)
        os.replace(tmp, os.path.join(out_dir, META_FILE))
    dist.barrier()
    return out_dir


# ------------------------------------------------------------------------------------ forward
def forward_rewards(model, mb, sequence_parallel: bool) -> torch.Tensor:
    """One Megatron ``forward_step`` body: the chunk's output (T, B, H) on inner stages; on the last
    stage the (B,) fp32 rewards at the rows' last tokens."""
    m = unwrap(model)
    dev = next(m.parameters()).device  # the batch is built on CPU; the model may live on a GPU
    tokens, position_ids = mb.tokens.to(dev, non_blocking=True), mb.position_ids.to(dev, non_blocking=True)
    if not m.post_process:
        return model(tokens, position_ids, attention_mask=None)
    with hidden_states_only(m):
        h = model(tokens, position_ids, attention_mask=None)        # (T, B, H), after the final norm
    if sequence_parallel:
        from megatron.core.tensor_parallel import gather_from_sequence_parallel_region
        h = gather_from_sequence_parallel_region(h, tensor_parallel_output_grad=False)  # (T/tp, B, H) -> (T, B, H)
    B = mb.tokens.shape[0]
    h_last = h[torch.as_tensor(mb.last, device=dev), torch.arange(B, device=dev)]      # (B, H)
    return m.value_head(h_last)                                                        # (B,)


def schedule_batches(batches: list, layout) -> list:
    """``batches`` shaped for the pipeline schedule of ``layout`` (see ``batch.for_schedule``); the
    count it returns is the number of micro-batches the schedule divides each loss by."""
    from r1mega.reward_model.batch import for_schedule

    return for_schedule(batches, layout.pipeline, bool(layout.virtual_pipeline))


def run_schedule(chunks: list, batches: list, layout, on_rewards, forward_only: bool):
    """Run ``batches`` through Megatron's pipeline schedule (any PP layout). ``on_rewards(mb,
    rewards (B,))`` is called on the last stage for each micro-batch and returns its loss (a scalar
    that the schedule divides by the number of micro-batches and, unless ``forward_only``,
    back-propagates)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    batches = schedule_batches(batches, layout)
    T = max(b.tokens.shape[1] for b in batches)
    B = max(b.tokens.shape[0] for b in batches)

    def forward_step(data_iterator, model):
        mb = next(data_iterator)
        out = forward_rewards(model, mb, layout.sequence_parallel)

        def loss_func(output, non_loss_data=False):
            return on_rewards(mb, output), {}

        return out, loss_func

    its = [iter(batches) for _ in chunks]
    fb = get_forward_backward_func()
    return fb(forward_step_func=forward_step, data_iterator=its if len(chunks) > 1 else its[0],
              model=chunks if len(chunks) > 1 else chunks[0], num_microbatches=len(batches), seq_length=T,
              micro_batch_size=B, forward_only=forward_only)
