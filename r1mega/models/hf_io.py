"""Hugging Face <-> Megatron weights, on any TP/PP layout, one tensor at a time.

Loading: every rank reads, from the safetensors files, only the HF tensors its own Megatron
parameters need and keeps its TP shard of them. Exporting / weight sync: a collective
generator, :func:`iter_hf_weights`, walks the model in a fixed order; the owning pipeline
stage gathers the TP shards of one parameter, converts Megatron's fused layouts to HF ones,
and broadcasts the result to the other stages. Peak extra memory is one full parameter.

Layout conversions (Megatron -> HF):
  * ``linear_qkv`` (grouped per query group: [q_g (Q/G heads), k_g, v_g] for each group g)
      -> ``q_proj``, ``k_proj``, ``v_proj`` (weights and biases).
  * ``linear_fc1`` ([gate_r; up_r] on each TP rank r) -> ``gate_proj``, ``up_proj``.
  * vocab-parallel embedding / output layer: padded rows (for an equal TP split) dropped.
  * tied embeddings: no ``lm_head`` in the export; the last stage's copy is loaded from
    ``embed_tokens``.
  * MoE (Qwen2-MoE / Qwen3-MoE): ``mlp.router.weight`` -> ``mlp.gate.weight``; routed experts
    (``mlp.experts.local_experts.{i}.linear_fc1/fc2`` with SequentialMLP, or TEGroupedMLP's
    ``mlp.experts.linear_fc1.weight{i}``) -> ``mlp.experts.{e}.gate_proj/up_proj/down_proj``
    with the global expert id e = ep_rank * experts_per_rank + i; the shared expert
    (``mlp.shared_experts.linear_fc1/fc2``, ``gate_weight``) -> ``mlp.shared_expert.*``,
    ``mlp.shared_expert_gate.weight``. Expert weights are split over the expert-TP group
    (not the attention TP group); each rank loads only its own experts, and export/sync
    gathers one expert tensor at a time (expert TP all-gather on the owning EP rank, then a
    broadcast over the EP group).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from r1mega.config.base import ConfigError
from r1mega.models.arch import ModelArch

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# Routed experts: SequentialMLP (local spec) and TEGroupedMLP (TE spec with grouped GEMM).
_EXPERT = (re.compile(r"^mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12])\.weight$"),
           re.compile(r"^mlp\.experts\.(linear_fc[12])\.weight(\d+)$"))

# Megatron name within a layer -> (kind, HF names within "model.layers.{L}.")
_LAYER_MAP = {
    "input_layernorm.weight": ("copy", ["input_layernorm.weight"]),
    "self_attention.linear_qkv.layer_norm_weight": ("copy", ["input_layernorm.weight"]),  # TE spec
    "self_attention.linear_qkv.weight": ("qkv", ["self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                                  "self_attn.v_proj.weight"]),
    "self_attention.linear_qkv.bias": ("qkv", ["self_attn.q_proj.bias", "self_attn.k_proj.bias",
                                                "self_attn.v_proj.bias"]),
    "self_attention.q_layernorm.weight": ("copy", ["self_attn.q_norm.weight"]),
    "self_attention.k_layernorm.weight": ("copy", ["self_attn.k_norm.weight"]),
    "self_attention.linear_proj.weight": ("copy", ["self_attn.o_proj.weight"]),
    "pre_mlp_layernorm.weight": ("copy", ["post_attention_layernorm.weight"]),
    "mlp.linear_fc1.layer_norm_weight": ("copy", ["post_attention_layernorm.weight"]),  # TE spec
    "mlp.linear_fc1.weight": ("gate_up", ["mlp.gate_proj.weight", "mlp.up_proj.weight"]),
    "mlp.linear_fc2.weight": ("copy", ["mlp.down_proj.weight"]),
    # MoE layers
    "mlp.router.weight": ("copy", ["mlp.gate.weight"]),
    "mlp.shared_experts.linear_fc1.weight": ("gate_up", ["mlp.shared_expert.gate_proj.weight",
                                                         "mlp.shared_expert.up_proj.weight"]),
    "mlp.shared_experts.linear_fc2.weight": ("copy", ["mlp.shared_expert.down_proj.weight"]),
    "mlp.shared_experts.gate_weight": ("copy", ["mlp.shared_expert_gate.weight"]),
}
# Family-specific names: DeepSeek-V3's multi-head latent attention, plural shared experts and
# the routing bias (a buffer in both: Megatron's router ``expert_bias``).
_FAMILY_LAYER_MAP = {
    "deepseek_v3": {
        "self_attention.linear_q_proj.weight": ("copy", ["self_attn.q_proj.weight"]),
        "self_attention.linear_q_down_proj.weight": ("copy", ["self_attn.q_a_proj.weight"]),
        "self_attention.q_layernorm.weight": ("copy", ["self_attn.q_a_layernorm.weight"]),
        "self_attention.linear_q_up_proj.layer_norm_weight": ("copy", ["self_attn.q_a_layernorm.weight"]),  # TE
        "self_attention.linear_q_up_proj.weight": ("copy", ["self_attn.q_b_proj.weight"]),
        "self_attention.linear_kv_down_proj.weight": ("copy", ["self_attn.kv_a_proj_with_mqa.weight"]),
        "self_attention.kv_layernorm.weight": ("copy", ["self_attn.kv_a_layernorm.weight"]),
        "self_attention.linear_kv_up_proj.layer_norm_weight": ("copy", ["self_attn.kv_a_layernorm.weight"]),  # TE
        "self_attention.linear_kv_up_proj.weight": ("copy", ["self_attn.kv_b_proj.weight"]),
        "mlp.router.expert_bias": ("copy", ["mlp.gate.e_score_correction_bias"]),
        "mlp.shared_experts.linear_fc1.weight": ("gate_up", ["mlp.shared_experts.gate_proj.weight",
                                                             "mlp.shared_experts.up_proj.weight"]),
        "mlp.shared_experts.linear_fc2.weight": ("copy", ["mlp.shared_experts.down_proj.weight"]),
    },
}
# Buffers that are model weights (loaded, exported, synced like parameters).
_BUFFERS = re.compile(r"\.router\.expert_bias$")
_EXPERT_HF = {"linear_fc1": ("gate_up", ["gate_proj.weight", "up_proj.weight"]),
              "linear_fc2": ("copy", ["down_proj.weight"])}
_TOP_MAP = {
    "embedding.word_embeddings.weight": ("vocab", ["model.embed_tokens.weight"]),
    "decoder.final_layernorm.weight": ("copy", ["model.norm.weight"]),
    "output_layer.weight": ("vocab", ["lm_head.weight"]),
}


@dataclass(frozen=True)
class ParamRef:
    """Where one Megatron parameter sits in the global model and what HF tensors it is."""

    key: str            # global Megatron name (layer and expert index global), the same on every rank
    kind: str           # copy | qkv | gate_up | vocab
    hf_names: tuple[str, ...]
    expert: int | None = None  # global id of a routed expert (EP-sharded, split over expert TP)


def _expert_ref(L: int, sub: str, expert_offset: int) -> ParamRef | None:
    """The reference of a routed-expert weight, keyed by its *global* expert id."""
    for i, pat in enumerate(_EXPERT):
        m = pat.match(sub)
        if m:
            local, fc = (int(m.group(1)), m.group(2)) if i == 0 else (int(m.group(2)), m.group(1))
            e = expert_offset + local
            kind, hf = _EXPERT_HF[fc]
            return ParamRef(f"decoder.layers.{L}.mlp.experts.local_experts.{e}.{fc}.weight", kind,
                            tuple(f"model.layers.{L}.mlp.experts.{e}.{h}" for h in hf), expert=e)
    return None


def global_ref(local_name: str, layer_number: int | None, expert_offset: int = 0,
               family: str | None = None) -> ParamRef:
    """Map a chunk-local Megatron parameter name to its global reference.

    ``expert_offset``: global id of this rank's first routed expert (ep_rank * experts_per_rank);
    ``family``: the model family, for names that differ between families (see ``_FAMILY_LAYER_MAP``).
    """
    name = local_name.removeprefix("module.")
    m = _LAYER.match(name)
    if m:
        sub = m.group(2)
        ref = _expert_ref(layer_number, sub, expert_offset)
        if ref is not None:
            return ref
        table = {**_LAYER_MAP, **_FAMILY_LAYER_MAP.get(family, {})}
        if sub not in table:
            raise KeyError(f"no Hugging Face mapping for Megatron parameter {name!r}")
        kind, hf = table[sub]
        L = layer_number
        return ParamRef(f"decoder.layers.{L}.{sub}", kind, tuple(f"model.layers.{L}.{h}" for h in hf))
    if name not in _TOP_MAP:
        raise KeyError(f"no Hugging Face mapping for Megatron parameter {name!r}")
    kind, hf = _TOP_MAP[name]
    return ParamRef(name, kind, tuple(hf))


def _expert_offset(chunks) -> int:
    """Global id of this rank's first routed expert (0 for dense models)."""
    arch = getattr(_unwrap(chunks[0]), "r1mega_arch", None) if chunks else None
    if arch is None or not getattr(arch, "is_moe", False):
        return 0
    from megatron.core import parallel_state as ps
    return ps.get_expert_model_parallel_rank() * (arch.num_experts // ps.get_expert_model_parallel_world_size())


def _unwrap(m):
    while hasattr(m, "module"):
        m = m.module
    return m


def named_global_params(chunks: list[torch.nn.Module]) -> Iterator[tuple[ParamRef, torch.nn.Parameter]]:
    """(global reference, parameter) for every parameter of this rank's model chunks, then the
    buffers that are model weights (DeepSeek-V3's routing bias)."""
    offset = _expert_offset(chunks)
    arch = getattr(_unwrap(chunks[0]), "r1mega_arch", None) if chunks else None
    family = getattr(arch, "family", None)
    for chunk in chunks:
        layers = {}
        decoder = getattr(_unwrap(chunk), "decoder", None)
        if decoder is not None:
            for i, layer in enumerate(decoder.layers):
                layers[i] = layer.layer_number - 1  # Megatron numbers layers from 1, globally
        weights = list(chunk.named_parameters()) + [(n, b) for n, b in chunk.named_buffers() if _BUFFERS.search(n)]
        for name, p in weights:
            m = _LAYER.match(name.removeprefix("module."))
            yield global_ref(name, layers[int(m.group(1))] if m else None, offset, family), p


# --------------------------------------------------------------------------- TP helpers
def _tp_group(expert: bool = False):
    """(group, size, rank) of the tensor-parallel group splitting a parameter: the expert TP
    group for routed experts, the attention TP group for everything else."""
    from megatron.core import parallel_state as ps
    if expert:
        return ps.get_expert_tensor_parallel_group(), ps.get_expert_tensor_parallel_world_size(), \
            ps.get_expert_tensor_parallel_rank()
    return ps.get_tensor_model_parallel_group(), ps.get_tensor_model_parallel_world_size(), \
        ps.get_tensor_model_parallel_rank()


def _is_tp_split(p: torch.Tensor) -> bool:
    return bool(getattr(p, "tensor_model_parallel", False))


def _qkv_split(full: torch.Tensor, arch: ModelArch) -> list[torch.Tensor]:
    """Megatron grouped QKV [G*(Q/G+2)*D, ...] -> [q (Q*D, ...), k (G*D, ...), v (G*D, ...)]."""
    G, Q, D = arch.num_kv_heads, arch.num_heads, arch.head_dim
    qpg = Q // G
    rest = full.shape[1:]
    x = full.reshape(G, qpg + 2, D, *rest)                                  # (G, Q/G+2, D, H)
    q = x[:, :qpg].reshape(Q * D, *rest)
    k = x[:, qpg].reshape(G * D, *rest)
    v = x[:, qpg + 1].reshape(G * D, *rest)
    return [q.contiguous(), k.contiguous(), v.contiguous()]


def _qkv_merge(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    """Inverse of :func:`_qkv_split`."""
    G, Q, D = arch.num_kv_heads, arch.num_heads, arch.head_dim
    rest = q.shape[1:]
    x = torch.cat([q.reshape(G, Q // G, D, *rest), k.reshape(G, 1, D, *rest), v.reshape(G, 1, D, *rest)], dim=1)
    return x.reshape(G * (Q // G + 2) * D, *rest)


def to_hf(ref: ParamRef, shards: list[torch.Tensor], partition_dim: int, arch: ModelArch) -> list[torch.Tensor]:
    """TP shards of one Megatron parameter (in TP rank order) -> its HF tensors."""
    if ref.kind == "gate_up":
        gate = torch.cat([s.chunk(2, dim=0)[0] for s in shards], dim=0)
        up = torch.cat([s.chunk(2, dim=0)[1] for s in shards], dim=0)
        return [gate, up]
    full = shards[0] if len(shards) == 1 else torch.cat(shards, dim=partition_dim)
    if ref.kind == "qkv":
        return _qkv_split(full, arch)
    if ref.kind == "vocab":
        return [full[: arch.vocab_size]]
    return [full]


def from_hf(ref: ParamRef, hf: list[torch.Tensor], param: torch.Tensor, arch: ModelArch,
            tp_size: int, tp_rank: int) -> torch.Tensor:
    """HF tensors of one parameter -> this TP rank's shard, shaped like ``param``."""
    split = _is_tp_split(param)
    dim = getattr(param, "partition_dim", 0)
    if ref.kind == "gate_up":
        gate, up = hf
        if split:
            gate, up = gate.chunk(tp_size, dim=0)[tp_rank], up.chunk(tp_size, dim=0)[tp_rank]
        return torch.cat([gate, up], dim=0)
    if ref.kind == "qkv":
        full = _qkv_merge(*hf, arch)
    elif ref.kind == "vocab":
        full = hf[0]
        padded = param.shape[0] * (tp_size if split else 1)
        if padded > full.shape[0]:
            full = torch.cat([full, full.new_zeros(padded - full.shape[0], *full.shape[1:])], dim=0)
    else:
        full = hf[0]
    if split:
        full = full.chunk(tp_size, dim=dim)[tp_rank]
    return full


# --------------------------------------------------------------------------- loading
class SafetensorsReader:
    """Lazy access to the tensors of an HF model directory (single or sharded safetensors)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        index = os.path.join(self.path, "model.safetensors.index.json")
        single = os.path.join(self.path, "model.safetensors")
        if os.path.isfile(index):
            with open(index) as f:
                self.files = {k: os.path.join(self.path, v) for k, v in json.load(f)["weight_map"].items()}
        elif os.path.isfile(single):
            self.files = {k: single for k in _open_safetensors(single).keys()}
        else:
            raise ConfigError(f"{self.path}: no model.safetensors or model.safetensors.index.json; "
                              f"expected a Hugging Face model directory saved with safetensors")
        self._open: dict[str, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def shape(self, name: str) -> list[int]:
        """A tensor's shape from the file header (nothing is read)."""
        return list(self._handle(name).get_slice(name).get_shape())

    def _handle(self, name: str):
        """The open safetensors file holding ``name``."""
        if name not in self.files:
            raise KeyError(f"{self.path}: tensor {name!r} not found in the checkpoint")
        file = self.files[name]
        if file not in self._open:
            if not os.path.isfile(file):
                raise ConfigError(f"{file}: listed in model.safetensors.index.json for {name!r} but missing")
            self._open[file] = _open_safetensors(file)
        return self._open[file]

    def get(self, name: str) -> torch.Tensor:
        handle = self._handle(name)
        try:
            return handle.get_tensor(name)
        except Exception as e:  # safetensors raises its own error type for damaged data
            raise ConfigError(f"{self.files[name]}: tensor {name!r} cannot be read ({e}); the file is damaged or "
                              "truncated: copy or export it again") from None


def check_layer_count(reader: SafetensorsReader, arch: ModelArch) -> None:
    """Weights of layers past ``num_hidden_layers`` mean config.json describes a smaller model than
    the file holds: loading would silently drop them."""
    import re

    found = {int(m.group(1)) for name in reader.files if (m := re.search(r"\.layers\.(\d+)\.", name))}
    extra = sorted(i for i in found if i >= arch.num_layers)
    if extra:
        raise ConfigError(f"{reader.path}: the weights hold layers up to {max(found)} but config.json has "
                          f"num_hidden_layers={arch.num_layers}; config.json does not match the weights")


def _open_safetensors(file: str):
    """``safe_open`` with an error that names the file when its header is damaged or cut short."""
    from safetensors import safe_open

    try:
        return safe_open(file, "pt")
    except Exception as e:  # SafetensorError (header too short, bad JSON) or OSError
        raise ConfigError(f"{file}: not a readable safetensors file ({e}); it is damaged or truncated "
                          f"({os.path.getsize(file)} bytes): copy or export it again") from None


def load_hf_weights(chunks: list[torch.nn.Module], path: str | os.PathLike, arch: ModelArch) -> None:
    """Fill this rank's model chunks from an HF checkpoint (each rank reads its own shards)."""
    reader = SafetensorsReader(path)
    check_layer_count(reader, arch)
    for ref, param in named_global_params(chunks):
        _, tp, tp_rank = _tp_group(expert=ref.expert is not None)
        names = list(ref.hf_names)
        if ref.key == "output_layer.weight" and (arch.tie_embeddings or names[0] not in reader):
            names = ["model.embed_tokens.weight"]
        try:
            hf = [reader.get(n) for n in names]
            shard = from_hf(ref, hf, param, arch, tp, tp_rank)
        except KeyError as e:
            raise ConfigError(f"{path}: {e.args[0]}; config.json describes a model the weights do not hold") from None
        except (RuntimeError, ValueError) as e:  # a view/split of the wrong size
            shapes = {n: tuple(reader.shape(n)) for n in names}
            raise ConfigError(f"{path}: config.json does not match the weights: {shapes} cannot give {ref.key} "
                              f"of this config ({e})") from None
        if shard.shape != param.shape:
            raise ConfigError(f"{path}: {names} give shape {tuple(shard.shape)} for {ref.key}, "
                              f"the model expects {tuple(param.shape)}; config.json does not match the weights")
        with torch.no_grad():
            param.copy_(shard.to(param.dtype))


# --------------------------------------------------------------------------- export / sync
_EXPERT_KEY = re.compile(r"^(decoder\.layers\.\d+\.mlp\.experts\.local_experts\.)(\d+)(\..+)$")


def _expand_experts(refs: list[ParamRef], num_experts: int) -> list[str]:
    """Global keys of this stage: a routed-expert key stands for that weight of *every* expert,
    so all EP ranks list the same keys (each holds only its own experts' parameters)."""
    keys: list[str] = []
    seen: set[str] = set()
    for ref in refs:
        m = _EXPERT_KEY.match(ref.key) if ref.expert is not None else None
        for k in ([f"{m.group(1)}{e}{m.group(3)}" for e in range(num_experts)] if m else [ref.key]):
            if k not in seen:
                seen.add(k)
                keys.append(k)
    return keys


def _owner_map(chunks, num_experts: int = 0) -> tuple[list[str], dict[str, int]]:
    """Global parameter keys in a fixed order, and which PP rank owns each."""
    from megatron.core import parallel_state as ps

    local = _expand_experts([ref for ref, _ in named_global_params(chunks)], num_experts)
    pp = ps.get_pipeline_model_parallel_world_size()
    if pp == 1:
        return local, {k: 0 for k in local}
    gathered: list = [None] * pp
    dist.all_gather_object(gathered, local, group=ps.get_pipeline_model_parallel_group())
    owner: dict[str, int] = {}
    order: list[str] = []
    for r, keys in enumerate(gathered):
        for k in keys:
            if k not in owner:
                owner[k] = r
                order.append(k)
    return order, owner


def _hf_sort_key(key: str) -> tuple:
    """Embedding, then layer by layer (expert ids in numeric order), then the final norm / head."""
    natural = tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key))
    m = re.match(r"decoder\.layers\.(\d+)\.", key)
    if key.startswith("embedding."):
        return (0, 0, natural)
    if m:
        return (1, int(m.group(1)), natural)
    return (2, 0, natural)


def _gather_tp(ref: ParamRef, p: torch.Tensor) -> list[torch.Tensor]:
    """The TP shards of ``p`` in rank order (expert TP for routed experts); [p] if not split."""
    group, tp, _ = _tp_group(expert=ref.expert is not None)
    data = p.detach()
    if tp > 1 and _is_tp_split(p):
        shards = [torch.empty_like(data) for _ in range(tp)]
        dist.all_gather(shards, data.contiguous(), group=group)
        return shards
    return [data]


def _expert_tensors(key: str, local: dict, arch: ModelArch) -> list[torch.Tensor]:
    """HF tensors of one routed-expert weight on every rank of this stage: the owning EP rank
    gathers it over expert TP, then broadcasts the stacked shards over the EP group."""
    from megatron.core import parallel_state as ps

    m = _EXPERT_KEY.match(key)
    e = int(m.group(2))
    ep, ep_rank = ps.get_expert_model_parallel_world_size(), ps.get_expert_model_parallel_rank()
    per_rank = arch.num_experts // ep
    owner = e // per_rank
    mine = f"{m.group(1)}{ep_rank * per_rank + e % per_rank}{m.group(3)}"  # same weight, my own expert
    ref, p = local[mine]
    etp = ps.get_expert_tensor_parallel_world_size() if _is_tp_split(p) else 1
    if owner == ep_rank:
        ref, p = local[key]
        stacked = torch.stack(_gather_tp(ref, p))                        # (ETP, *shard)
    else:
        stacked = torch.empty((etp, *p.shape), dtype=p.dtype)
    if ep > 1:
        group = ps.get_expert_model_parallel_group()
        dist.broadcast(stacked, src=dist.get_global_rank(group, owner), group=group)
    ref = ParamRef(key, ref.kind, tuple(n.replace(f".experts.{ref.expert}.", f".experts.{e}.") for n in ref.hf_names),
                   expert=e)
    return to_hf(ref, list(stacked.unbind(0)), getattr(p, "partition_dim", 0), arch), ref.hf_names


def iter_hf_weights(chunks: list[torch.nn.Module], arch: ModelArch) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, full tensor)`` for the whole model, on every rank (collective).

    Every rank must consume the generator to the end, in step: each parameter is gathered
    over TP by its owning pipeline stage and broadcast to the other stages; a routed expert's
    weight is gathered over expert TP by its owning EP rank and broadcast over the EP group,
    one expert tensor at a time. Tied output layers are skipped (HF ties ``lm_head`` to
    ``embed_tokens``).
    """
    from megatron.core import parallel_state as ps

    pp = ps.get_pipeline_model_parallel_world_size()
    pp_rank = ps.get_pipeline_model_parallel_rank()
    pp_group = ps.get_pipeline_model_parallel_group()
    order, owner = _owner_map(chunks, arch.num_experts)
    local = {ref.key: (ref, p) for ref, p in named_global_params(chunks)}
    for key in sorted(order, key=_hf_sort_key):
        if key == "output_layer.weight" and arch.tie_embeddings:
            continue
        tensors, hf_names = None, None
        if owner[key] == pp_rank:
            if _EXPERT_KEY.match(key):
                tensors, hf_names = _expert_tensors(key, local, arch)
            else:
                ref, p = local[key]
                tensors, hf_names = to_hf(ref, _gather_tp(ref, p), getattr(p, "partition_dim", 0), arch), ref.hf_names
        if pp > 1:
            src = dist.get_global_rank(pp_group, owner[key])
            obj = [(hf_names, [tuple(t.shape) for t in tensors], str(tensors[0].dtype)) if tensors else None]
            dist.broadcast_object_list(obj, src=src, group=pp_group)
            hf_names, shapes, dtype = obj[0]
            if tensors is None:
                dt = getattr(torch, dtype.removeprefix("torch."))
                tensors = [torch.empty(s, dtype=dt) for s in shapes]
            for t in tensors:
                dist.broadcast(t, src=src, group=pp_group)
        yield from zip(hf_names, tensors)


def export_hf(chunks: list[torch.nn.Module], arch: ModelArch, out_dir: str | os.PathLike,
              tokenizer_dir: str | None = None, shard_bytes: int = 2 << 30, dtype: torch.dtype | None = None) -> None:
    """Write an HF model directory (config.json + sharded safetensors), streaming.

    Collective: every rank calls it; global rank 0 writes. At most ``shard_bytes`` of tensors
    are held before a shard file is written. The directory appears atomically (written to a
    temporary sibling, then renamed).
    """
    from safetensors.torch import save_file

    rank = dist.get_rank() if dist.is_initialized() else 0
    out_dir = os.fspath(out_dir)
    tmp = out_dir.rstrip("/") + ".tmp"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
    pending: dict[str, torch.Tensor] = {}
    pending_bytes, files, weight_map, total = 0, [], {}, 0

    def flush():
        nonlocal pending, pending_bytes
        if not pending:
            return
        name = f"model-{len(files) + 1:05d}.safetensors"
        save_file(pending, os.path.join(tmp, name), metadata={"format": "pt"})
        files.append(name)
        for k in pending:
            weight_map[k] = name
        pending, pending_bytes = {}, 0

    for name, t in iter_hf_weights(chunks, arch):
        if rank != 0:
            continue
        t = t.to(dtype) if dtype is not None else t
        t = t.contiguous().clone()
        pending[name] = t
        pending_bytes += t.numel() * t.element_size()
        total += t.numel() * t.element_size()
        if pending_bytes >= shard_bytes:
            flush()
    if rank == 0:
        flush()
        if len(files) == 1:
            os.rename(os.path.join(tmp, files[0]), os.path.join(tmp, "model.safetensors"))
        else:
            final = {}
            for i, f in enumerate(files):
                new = f.replace(".safetensors", f"-of-{len(files):05d}.safetensors")
                os.rename(os.path.join(tmp, f), os.path.join(tmp, new))
                final[f] = new
            with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total},
                           "weight_map": {k: final[v] for k, v in weight_map.items()}}, f, indent=2)
        cfg = dict(arch.raw)
        if dtype is not None:
            cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        if tokenizer_dir:
            copy_tokenizer_files(tokenizer_dir, tmp)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    if dist.is_initialized():
        dist.barrier()


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "tokenizer.model", "generation_config.json", "chat_template.jinja",
                   "added_tokens.json")


def copy_tokenizer_files(src: str, dst: str) -> None:
    if os.path.isfile(src):  # a sentencepiece .model file
        shutil.copy(src, os.path.join(dst, "tokenizer.model"))
        return
    for name in TOKENIZER_FILES:
        p = os.path.join(src, name)
        if os.path.isfile(p):
            shutil.copy(p, os.path.join(dst, name))
