"""Training checkpoints: model + optimizer + scheduler + RNG + run state, written atomically.

    path  = save_checkpoint(root, step, chunks=chunks, optimizer=opt, scheduler=sched,
                            extra={"policy_version": v, "sampler": s, ...}, keep_last=3)
    path  = resolve_resume(root, cfg.run.resume)        # "auto" | "never" | a path
    extra = load_checkpoint(path, chunks=chunks, optimizer=opt, scheduler=sched)

On disk (``root/step_000123/``)::

    meta.json        format version, step, saved layout, what is inside (rank 0)
    config.json      the HF config of the model: the architecture is known without the HF dir
    model/           Megatron distributed checkpoint of the weights (loads at any TP/PP layout)
    optim/           the distributed optimizer's state, per parameter in model space (any layout)
    scheduler.pt     the LR scheduler's state (rank 0)
    ranks/rank_00003.pt   per rank: RNG states (python, numpy, torch, CUDA, Megatron tracker), extra
    extra.json       rank 0's ``extra`` when it is JSON-serialisable (for people, not for loading)
    manifest.json    size and SHA-256 of every file above (r1mega.checkpoint.manifest)
    COMPLETE         written last, before the commit

Atomicity: everything is written into ``root/step_000123.tmp/``; after a barrier, rank 0
fsyncs the tree, writes ``COMPLETE`` and renames the directory to ``step_000123`` (the
rename is the commit). A crash at any point before the rename leaves only a ``.tmp``
directory, which :func:`find_latest_checkpoint` ignores and the next save deletes.
Older checkpoints are pruned (``keep_last``) only after the new one is committed.

Verification: resuming checks the manifest (every file's size and SHA-256) on rank 0 before
anything is loaded. ``resume="auto"`` skips a damaged or incomplete newest checkpoint with a
warning naming what is wrong and takes the previous good one; an explicit path that fails is an
error naming the file. Each rank reads its own RNG/extra file when the layout is unchanged.

Resharding: model weights and the distributed optimizer's state (``fully_reshardable``: the
canonical per-parameter form, gathered over DP at save) are stored per parameter with
global keys, so both load at another TP/PP/DP layout. RNG states are per
rank and are restored only when the world size and layout are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist

from r1mega.checkpoint.manifest import ManifestError, verify_manifest, write_manifest
from r1mega.checkpoint.sharded import load_model_shards, load_sharded, model_sharded_state_dict, save_sharded, \
    unwrap
from r1mega.config.base import ConfigError

FORMAT = "r1mega-checkpoint"
FORMAT_VERSION = 2  # 2: manifest.json with every file's SHA-256 (version 1 checkpoints load unverified)
COMPLETE = "COMPLETE"
META = "meta.json"
_STEP = re.compile(r"^step_(\d+)$")
# Optimizer state in its canonical per-parameter form (gathered over DP at save): any layout loads it.
OPTIM_METADATA = {"distrib_optim_sharding_type": "fully_reshardable", "chained_optim_avoid_prefix": True}


log = logging.getLogger("r1mega.checkpoint")


class CheckpointError(ConfigError):
    """A checkpoint is missing, incomplete, unreadable, damaged or does not fit the model."""


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def step_dir(root: str | os.PathLike, step: int) -> str:
    return os.path.join(os.fspath(root), f"step_{step:06d}")


# --------------------------------------------------------------------------- files
def _fsync_tree(path: str) -> None:
    """fsync every file and directory under ``path`` (written by any rank on this host)."""
    for dirpath, _, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(dirpath)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def _torch_save(obj, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _layout_dict(chunks=None) -> dict:
    """The parallel layout of this run (and an uneven pipeline layer split, read off the model's config)."""
    from megatron.core import parallel_state as ps

    split = {}
    if chunks:
        cfg = getattr(chunks[0], "config", None) or getattr(getattr(chunks[0], "module", None), "config", None)
        for key, attr in (("first_stage_layers", "num_layers_in_first_pipeline_stage"),
                          ("last_stage_layers", "num_layers_in_last_pipeline_stage")):
            if getattr(cfg, attr, None) is not None:
                split[key] = getattr(cfg, attr)
    return {**split, "world_size": _world(),
            "tensor": ps.get_tensor_model_parallel_world_size(),
            "pipeline": ps.get_pipeline_model_parallel_world_size(),
            "virtual_pipeline": ps.get_virtual_pipeline_model_parallel_world_size(),
            "data": ps.get_data_parallel_world_size(),
            "context": ps.get_context_parallel_world_size(),
            "expert": ps.get_expert_model_parallel_world_size(),
            "expert_tensor": ps.get_expert_tensor_parallel_world_size()}


# --------------------------------------------------------------------------- RNG
def rng_state() -> dict:
    """This rank's random states: python, numpy, torch CPU, CUDA, Megatron's tracker."""
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "megatron_tracker": get_cuda_rng_tracker().get_states()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("megatron_tracker"):
        get_cuda_rng_tracker().set_states(state["megatron_tracker"])


# --------------------------------------------------------------------------- validity
def read_meta(path: str | os.PathLike) -> dict:
    """``meta.json`` of a committed checkpoint; CheckpointError naming what is wrong."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is not a directory")
    if not os.path.isfile(os.path.join(path, COMPLETE)):
        raise CheckpointError(f"checkpoint {path!r} is incomplete (no {COMPLETE} marker): its save was "
                              f"interrupted; resume from an earlier step or use resume='auto'")
    try:
        with open(os.path.join(path, META)) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path!r}: unreadable {META} ({e})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path!r}: {META} has format {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path!r} has format version {meta['version']}; this r1mega reads "
                              f"versions <= {FORMAT_VERSION}")
    return meta


def is_valid_checkpoint(path: str | os.PathLike) -> bool:
    try:
        read_meta(path)
        return True
    except CheckpointError:
        return False


def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, str]]:
    """(step, path) of the committed, readable checkpoints under ``root``, oldest first."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        m = _STEP.match(name)
        if m and is_valid_checkpoint(os.path.join(root, name)):
            found.append((int(m.group(1)), os.path.join(root, name)))
    return sorted(found)


def find_latest_checkpoint(root: str | os.PathLike) -> str | None:
    """The newest valid checkpoint under ``root`` (``.tmp`` and incomplete ones ignored), or None."""
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """``meta.json`` of ``path`` after checking every file against the manifest; CheckpointError
    naming the missing, truncated or damaged file. Version 1 checkpoints (before manifests) are
    read unverified."""
    path = os.fspath(path)
    meta = read_meta(path)
    if meta.get("version", 1) >= 2:
        try:
            verify_manifest(path)
        except ManifestError as e:
            raise CheckpointError(f"checkpoint {path!r} is damaged: {e}") from None
    return meta


def check_checkpoint_root(root: str | os.PathLike) -> None:
    """Collective, at start-up: ``root`` can be created and written, and holds room for one more
    checkpoint the size of its newest (a save is committed before the oldest is pruned). An
    unwritable directory is a CheckpointError now, not after the first ``save_every`` steps of
    work; too little space is a warning (sizes change as the run goes)."""
    root = os.fspath(root)
    box = [None]
    if _rank() == 0:
        probe = os.path.join(root, f".r1mega-write-test-{os.getpid()}")
        try:
            os.makedirs(root, exist_ok=True)
            with open(probe, "wb") as f:
                f.write(b"r1mega")
                f.flush()
                os.fsync(f.fileno())
            os.remove(probe)
        except OSError as e:
            box[0] = (f"checkpoint directory {root!r} is not writable ({e.strerror or e}); point run.output_dir "
                      f"at a writable place or fix its permissions before training")
        if box[0] is None:
            latest = find_latest_checkpoint(root)
            if latest is not None:
                need = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(latest) for n in names)
                free = shutil.disk_usage(root).free
                if free < need:
                    log.warning("checkpoint directory %s has %.2f GiB free; the last checkpoint took %.2f GiB, "
                                "so the next save may fail: free space or lower run.keep_last", root,
                                free / 2**30, need / 2**30)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        raise CheckpointError(box[0])


def _newest_good(root: str) -> str | None:
    """The newest step_* under ``root`` that verifies; each one skipped is a warning saying why."""
    steps = sorted((int(m.group(1)), os.path.join(root, n)) for n in os.listdir(root) if (m := _STEP.match(n)))
    for _, path in reversed(steps):
        try:
            verify_checkpoint(path)
            return path
        except CheckpointError as e:
            log.warning("resume: skipping %s: %s; falling back to the previous checkpoint", path, e)
    return None


def _resolve(root, resume: str) -> str | None:
    if resume == "never":
        return None
    if resume == "auto":
        root = os.fspath(root) if root is not None else None
        return _newest_good(root) if root is not None and os.path.isdir(root) else None
    path = os.fspath(resume)
    if not os.path.exists(path):
        raise CheckpointError(f"resume={path!r}: no such checkpoint (use resume='auto' or 'never', or an "
                              f"existing step_* directory)")
    if not os.path.isfile(os.path.join(path, META)) and not os.path.isfile(os.path.join(path, COMPLETE)):
        steps = [n for n in os.listdir(path) if _STEP.match(n)] if os.path.isdir(path) else []
        if steps:
            latest = _newest_good(path)
            if latest is None:
                raise CheckpointError(f"resume={path!r}: none of its {len(steps)} checkpoint(s) is complete "
                                      f"and intact")
            return latest
    verify_checkpoint(path)  # raises with the reason
    return path


def resolve_resume(root: str | os.PathLike | None, resume: str) -> str | None:
    """Which checkpoint to resume from, verified (collective when distributed: rank 0 reads).

    ``"never"`` -> None; ``"auto"`` -> the newest checkpoint under ``root`` that is complete and
    matches its manifest (None when there is none; each one skipped is a warning naming what is
    wrong); anything else is a checkpoint path (or a root holding ``step_*`` dirs, whose newest
    good checkpoint is used), which must exist, be complete and verify, else CheckpointError.
    """
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return _resolve(root, resume)
    box = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", _resolve(root, resume))
        except CheckpointError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise CheckpointError(value)
    return value


def resume_config_changes(path: str | os.PathLike, current: dict) -> list[str]:
    """The config changes since checkpoint ``path`` (its ``extra.json`` config) as log lines,
    after refusing by name those that cannot work at resume (:mod:`r1mega.config.resume`).
    A checkpoint saved without a config gives no lines."""
    from r1mega.config.resume import check_resume, describe_changes, resume_changes

    try:
        with open(os.path.join(os.fspath(path), "extra.json")) as f:
            saved = json.load(f).get("config")
    except (OSError, json.JSONDecodeError, AttributeError):
        saved = None
    if not isinstance(saved, dict):
        return []
    changes = resume_changes(saved, current)
    check_resume(changes, os.fspath(path))
    return describe_changes(changes)


# --------------------------------------------------------------------------- save
def _arch_of(chunks):
    arch = getattr(unwrap(chunks[0]), "r1mega_arch", None)
    if arch is None:
        raise CheckpointError("model chunks carry no r1mega_arch; build them with r1mega.models.build/load_hf")
    return arch


def _json_or_none(obj):
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError):
        return None


def write_checkpoint(path: str | os.PathLike, *, chunks: list, optimizer=None, scheduler=None,
                     extra: dict | None = None, step: int | None = None, tokenizer_dir: str | None = None) -> str:
    """Collective: write a checkpoint to ``path`` atomically (``path.tmp`` then rename)."""
    from r1mega.models.hf_io import copy_tokenizer_files

    path = os.fspath(path).rstrip("/")
    tmp = path + ".tmp"
    rank = _rank()
    arch = _arch_of(chunks)
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.join(tmp, "ranks"))
    _barrier()

    model_sd = model_sharded_state_dict(chunks)
    save_sharded(model_sd, os.path.join(tmp, "model"))
    if optimizer is not None:
        optim_sd = optimizer.sharded_state_dict(model_sharded_state_dict(chunks), metadata=OPTIM_METADATA)
        save_sharded(optim_sd, os.path.join(tmp, "optim"))
    _torch_save({"rng": rng_state(), "extra": extra or {}}, os.path.join(tmp, "ranks", f"rank_{rank:05d}.pt"))
    _barrier()  # every rank's files are written (and the distcp shards fsynced by their writers)

    if rank == 0:
        if scheduler is not None:
            _torch_save(scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
        _write_json(os.path.join(tmp, "config.json"), arch.raw)
        if tokenizer_dir:
            copy_tokenizer_files(tokenizer_dir, tmp)
        ex = _json_or_none(extra or {})
        if ex is not None:
            _write_json(os.path.join(tmp, "extra.json"), ex)
        _write_json(os.path.join(tmp, META), {
            "format": FORMAT, "version": FORMAT_VERSION, "step": step, "time": time.time(),
            "layout": _layout_dict(chunks), "arch": arch.to_dict(), "has_optimizer": optimizer is not None,
            "optimizer_sharding": OPTIM_METADATA["distrib_optim_sharding_type"] if optimizer is not None else None,
            "has_scheduler": scheduler is not None})
        _fsync_tree(tmp)
        write_manifest(tmp)  # every file's SHA-256, after the files and before the commit marker
        _write_json(os.path.join(tmp, COMPLETE), {"step": step})
        old = path + ".replaced.tmp"
        if os.path.exists(path):  # re-saving the same step: keep the old one until the new is in place
            shutil.rmtree(old, ignore_errors=True)
            os.rename(path, old)
        os.rename(tmp, path)  # the commit
        _fsync_dir(os.path.dirname(path) or ".")
        shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return path


def _clean_stale(root: str) -> None:
    """Remove leftovers of interrupted saves and prunes: ``step_*.tmp`` directories."""
    for name in os.listdir(root):
        p = os.path.join(root, name)
        if name.endswith(".tmp") and _STEP.match(name.split(".", 1)[0]):
            shutil.rmtree(p, ignore_errors=True)


def prune_checkpoints(root: str | os.PathLike, keep_last: int) -> list[str]:
    """Delete all but the newest ``keep_last`` valid checkpoints; returns the deleted paths."""
    if keep_last < 1:
        raise ConfigError(f"keep_last ({keep_last}) must be >= 1")
    found = list_checkpoints(root)
    doomed = [p for _, p in found[:-keep_last]]
    for p in doomed:
        # rename first: a crash mid-delete leaves a .tmp dir (ignored, cleaned), never a half checkpoint
        gone = p + ".deleted.tmp"
        os.rename(p, gone)
        shutil.rmtree(gone, ignore_errors=True)
    return doomed


def save_checkpoint(root: str | os.PathLike, step: int, *, chunks: list, optimizer=None, scheduler=None,
                    extra: dict | None = None, keep_last: int | None = None) -> str:
    """Collective: save a training checkpoint as ``root/step_{step:06d}``; returns its path.

    ``extra`` (step, policy version, sampler state, config dict, metrics state, ...) is saved
    per rank and returned by :func:`load_checkpoint`. With ``keep_last``, older checkpoints
    are deleted after this one is committed.
    """
    root = os.fspath(root)
    if _rank() == 0:
        os.makedirs(root, exist_ok=True)
        _clean_stale(root)
    _barrier()
    extra = dict(extra or {})
    extra.setdefault("step", step)
    path = write_checkpoint(step_dir(root, step), chunks=chunks, optimizer=optimizer, scheduler=scheduler,
                            extra=extra, step=step)
    if keep_last is not None and _rank() == 0:
        prune_checkpoints(root, keep_last)
    _barrier()
    return path


# --------------------------------------------------------------------------- load
def check_arch(path: str, chunks: list) -> None:
    """Raise CheckpointError naming each field where the checkpoint's model differs from ours."""
    from r1mega.models.arch import read_hf_config

    saved = read_hf_config(os.path.join(path, "config.json")).to_dict()
    ours = _arch_of(chunks).to_dict()
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs model {ours.get(k)!r}"
            for k in sorted(set(saved) | set(ours)) if saved.get(k) != ours.get(k)
            and k not in ("bos_token_id", "eos_token_id", "max_position_embeddings")]
    if diff:
        raise CheckpointError(f"checkpoint {path!r} holds a different model architecture than the one "
                              f"being loaded into: " + "; ".join(diff))


def _torch_adam_load_fixes(optimizer) -> None:
    """Let megatron's ``fully_reshardable`` load run over ``torch.optim.Adam`` (no Apex/TE).

    Without Apex/TE megatron wraps ``torch.optim.Adam``, which keeps a per-parameter ``step``
    tensor; two spots of megatron-core 0.16's distributed optimizer do not expect it:

    * building the sharded state dict to load into calls ``state_dict()``, which asserts a
      single ``step`` over the inner state -- empty in a fresh optimizer. We give every
      parameter a placeholder state (all of it replaced by the checkpoint's).
    * ``_set_main_param_and_optimizer_states`` copies every key of the inner state from the
      loaded tensors, which hold ``param``/``exp_avg``/``exp_avg_sq`` only -> ``KeyError: 'step'``.
      ``step`` is restored from the saved param groups by ``load_state_dict``, so we skip it.
    * that restore puts *one* ``step`` tensor into every parameter's state; torch Adam then
      increments it in place once per parameter, corrupting the bias correction of the next
      step. :func:`_unshare_adam_steps` gives each parameter its own copy after loading.

    Not CPU-specific (any machine without Apex/TE); TE's FusedAdam has no per-parameter step.
    """
    import types

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if not isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        for group in inner.param_groups:
            for p in group["params"]:
                st = inner.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if not hasattr(opt, "_set_main_param_and_optimizer_states") or \
                getattr(opt.config, "use_precision_aware_optimizer_no_fp8_or_ds_fp8", False):
            continue

        def set_states(self, model_param, tensors):
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            for key, dst in {"param": main_param, **self.optimizer.state[main_param]}.items():
                if key == "step" and key not in tensors:
                    continue
                dst.copy_(tensors[key])

        opt._set_main_param_and_optimizer_states = types.MethodType(set_states, opt)


def _unshare_adam_steps(optimizer) -> None:
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if isinstance(inner, torch.optim.Optimizer):
            for st in inner.state.values():
                if isinstance(st.get("step"), torch.Tensor):
                    st["step"] = st["step"].clone()


def load_checkpoint(path: str | os.PathLike, *, chunks: list, optimizer=None, scheduler=None,
                    restore_rng: bool = True) -> dict:
    """Collective: load a checkpoint into this rank's chunks (any layout) and optimizer.

    Returns this rank's ``extra`` (rank 0's when the world size changed). RNG states are
    restored when the layout is unchanged. The optimizer needs a checkpoint saved with one.
    """
    path = os.fspath(path)
    meta = read_meta(path)
    check_arch(path, chunks)
    if optimizer is not None and not meta.get("has_optimizer"):
        raise CheckpointError(f"checkpoint {path!r} has no optimizer state (a model-only checkpoint); "
                              f"load it with optimizer=None or r1mega.checkpoint.load_model_from_checkpoint")
    if scheduler is not None and not meta.get("has_scheduler"):
        raise CheckpointError(f"checkpoint {path!r} has no scheduler state; pass scheduler=None")

    load_model_shards(chunks, os.path.join(path, "model"))
    if optimizer is not None:
        # this run's hyperparameters (from its config) win over the saved ones: the state dict's param
        # groups carry max_lr, min_lr, weight decay, betas, ...; the moments and step count are the state
        config_groups = [{k: v for k, v in g.items() if k not in ("params", "step")} for g in optimizer.param_groups]
        _torch_adam_load_fixes(optimizer)
        optim_sd = optimizer.sharded_state_dict(model_sharded_state_dict(chunks), is_loading=True,
                                                metadata=OPTIM_METADATA)
        optimizer.load_state_dict(load_sharded(optim_sd, os.path.join(path, "optim")))
        _unshare_adam_steps(optimizer)
        for group, mine in zip(optimizer.param_groups, config_groups):
            group.update(mine)
    if scheduler is not None:
        scheduler.load_state_dict(torch.load(os.path.join(path, "scheduler.pt"), weights_only=False))

    same_layout = meta.get("layout") == _layout_dict(chunks)
    mine = os.path.join(path, "ranks", f"rank_{_rank():05d}.pt")
    if same_layout:  # every rank checks every file, so all ranks raise together (no rank left waiting)
        missing = [f"rank_{r:05d}.pt" for r in range(_world())
                   if not os.path.isfile(os.path.join(path, "ranks", f"rank_{r:05d}.pt"))]
        if missing:
            raise CheckpointError(f"checkpoint {path!r}: ranks/{', ranks/'.join(missing)} missing; each holds its "
                                  f"rank's RNG and run state (the layout is unchanged, so no other rank's file "
                                  f"stands in for it)")
    rank_file = mine if same_layout else os.path.join(path, "ranks", "rank_00000.pt")
    state = torch.load(rank_file, weights_only=False) if os.path.isfile(rank_file) else {"extra": {}}
    if restore_rng and "rng" in state:
        if same_layout:
            set_rng_state(state["rng"])
        elif _rank() == 0:
            warnings.warn(f"checkpoint {path!r} was saved at layout {meta.get('layout')}, loading at "
                          f"{_layout_dict(chunks)}: RNG states are not restored", stacklevel=2)
    _barrier()
    return state.get("extra", {})


def prepare_resume(root: str | os.PathLike, resume: str, current: dict) -> tuple[str | None, list[str]]:
    """Everything a training command checks before it loads a model: the checkpoint directory is
    writable (:func:`check_checkpoint_root`), ``resume`` resolves to an intact checkpoint or None
    (:func:`resolve_resume`), and the config changes since it are allowed. Returns the checkpoint
    and the change lines to log (:func:`resume_config_changes`)."""
    check_checkpoint_root(root)
    path = resolve_resume(root, resume)
    return path, (resume_config_changes(path, current) if path is not None else [])
