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
}
_TOP_MAP = {
    "embedding.word_embeddings.weight": ("vocab", ["model.embed_tokens.weight"]),
    "decoder.final_layernorm.weight": ("copy", ["model.norm.weight"]),
    "output_layer.weight": ("vocab", ["lm_head.weight"]),
}


@dataclass(frozen=True)
class ParamRef:
    """Where one Megatron parameter sits in the global model and what HF tensors it is."""

    key: str            # global Megatron name (layer index global), the same on every rank
    kind: str           # copy | qkv | gate_up | vocab
    hf_names: tuple[str, ...]


def global_ref(local_name: str, layer_number: int | None) -> ParamRef:
    """Map a chunk-local Megatron parameter name to its global reference."""
    name = local_name.removeprefix("module.")
    m = _LAYER.match(name)
    if m:
        sub = m.group(2)
        if sub not in _LAYER_MAP:
            raise KeyError(f"no Hugging Face mapping for Megatron parameter {name!r}")
        kind, hf = _LAYER_MAP[sub]
        L = layer_number
        return ParamRef(f"decoder.layers.{L}.{sub}", kind, tuple(f"model.layers.{L}.{h}" for h in hf))
    if name not in _TOP_MAP:
        raise KeyError(f"no Hugging Face mapping for Megatron parameter {name!r}")
    kind, hf = _TOP_MAP[name]
    return ParamRef(name, kind, tuple(hf))


def named_global_params(chunks: list[torch.nn.Module]) -> Iterator[tuple[ParamRef, torch.nn.Parameter]]:
    """(global reference, parameter) for every parameter of this rank's model chunks."""
    for chunk in chunks:
        layers = {}
        decoder = getattr(chunk, "decoder", None)
        if decoder is not None:
            for i, layer in enumerate(decoder.layers):
                layers[i] = layer.layer_number - 1  # Megatron numbers layers from 1, globally
        for name, p in chunk.named_parameters():
            m = _LAYER.match(name.removeprefix("module."))
            yield global_ref(name, layers[int(m.group(1))] if m else None), p


# --------------------------------------------------------------------------- TP helpers
def _tp_group():
    from megatron.core import parallel_state as ps
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
            from safetensors import safe_open
            with safe_open(single, "pt") as f:
                self.files = {k: single for k in f.keys()}
        else:
            raise ConfigError(f"{self.path}: no model.safetensors or model.safetensors.index.json; "
                              f"expected a Hugging Face model directory saved with safetensors")
        self._open: dict[str, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        if name not in self.files:
            raise KeyError(f"{self.path}: tensor {name!r} not found in the checkpoint")
        file = self.files[name]
        if file not in self._open:
            self._open[file] = safe_open(file, "pt")
        return self._open[file].get_tensor(name)


def load_hf_weights(chunks: list[torch.nn.Module], path: str | os.PathLike, arch: ModelArch) -> None:
    """Fill this rank's model chunks from an HF checkpoint (each rank reads its own shards)."""
    _, tp, tp_rank = _tp_group()
    reader = SafetensorsReader(path)
    for ref, param in named_global_params(chunks):
        names = list(ref.hf_names)
        if ref.key == "output_layer.weight" and (arch.tie_embeddings or names[0] not in reader):
            names = ["model.embed_tokens.weight"]
        hf = [reader.get(n) for n in names]
        shard = from_hf(ref, hf, param, arch, tp, tp_rank)
        if shard.shape != param.shape:
            raise ConfigError(f"{path}: {names} give shape {tuple(shard.shape)} for {ref.key}, "
                              f"the model expects {tuple(param.shape)}; does config.json match the weights?")
        with torch.no_grad():
            param.copy_(shard.to(param.dtype))


# --------------------------------------------------------------------------- export / sync
def _owner_map(chunks) -> tuple[list[str], dict[str, int]]:
    """Global parameter keys in a fixed order, and which PP rank owns each."""
    from megatron.core import parallel_state as ps

    local = [ref.key for ref, _ in named_global_params(chunks)]
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
    m = re.match(r"decoder\.layers\.(\d+)\.", key)
    if key.startswith("embedding."):
        return (0, 0, key)
    if m:
        return (1, int(m.group(1)), key)
    return (2, 0, key)


def iter_hf_weights(chunks: list[torch.nn.Module], arch: ModelArch) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(hf_name, full tensor)`` for the whole model, on every rank (collective).

    Every rank of the model-parallel group must consume the generator to the end, in step:
    each parameter is gathered over TP by its owning pipeline stage and broadcast to the
    other stages. Tied output layers are skipped (HF ties ``lm_head`` to ``embed_tokens``).
    """
    from megatron.core import parallel_state as ps

    tp_group, tp, _ = _tp_group()
    pp = ps.get_pipeline_model_parallel_world_size()
    pp_rank = ps.get_pipeline_model_parallel_rank()
    pp_group = ps.get_pipeline_model_parallel_group()
    order, owner = _owner_map(chunks)
    local = {ref.key: (ref, p) for ref, p in named_global_params(chunks)}
    for key in sorted(order, key=_hf_sort_key):
        if key == "output_layer.weight" and arch.tie_embeddings:
            continue
        if key in local and owner[key] == pp_rank:
            ref, p = local[key]
            data = p.detach()
            if tp > 1 and _is_tp_split(p):
                shards = [torch.empty_like(data) for _ in range(tp)]
                dist.all_gather(shards, data.contiguous(), group=tp_group)
            else:
                shards = [data]
            tensors = to_hf(ref, shards, getattr(p, "partition_dim", 0), arch)
        else:
            tensors = None
        if pp > 1:
            src = dist.get_global_rank(pp_group, owner[key])
            meta = [[(ref.hf_names, [tuple(t.shape) for t in tensors], str(tensors[0].dtype))] if tensors else [None]]
            obj = [meta[0][0]]
            dist.broadcast_object_list(obj, src=src, group=pp_group)
            names, shapes, dtype = obj[0]
            if tensors is None:
                dt = getattr(torch, dtype.removeprefix("torch."))
                tensors = [torch.empty(s, dtype=dt) for s in shapes]
            for t in tensors:
                dist.broadcast(t, src=src, group=pp_group)
            hf_names = names
        else:
            hf_names = local[key][0].hf_names
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
