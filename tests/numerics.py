"""Tolerances of the fp32 parity checks, derived from rounding (not fitted to one machine's output).

The model. An fp32 reduction of K terms (a dot product, a sum over tokens, an all-reduce) is within
gamma_K * sum|terms| of the exact value, gamma_K ~= K * u with u = eps / 2 (Higham, "Accuracy and
Stability of Numerical Algorithms", 3.1). Two evaluations that sum in different orders therefore
differ by at most K * eps relative to the magnitude of the terms, whatever the order: a TP / PP / DP
split of the reduction, another SIMD width (AVX2 vs AVX-512 kernels block K differently) or another
thread count. Through a computation of D chained reductions (forward and backward layers), the
first-order errors add: the difference is at most D * K * eps relative to the scale of the values.

Scale, not element: a rounding error is relative to the terms that were summed, so a bound is
``rel * scale`` with ``scale`` the largest |value| of the tensor (or of the terms), never
``rel * |element|`` (an element that is a difference of large terms carries their error; this is
how a score of 0.39 among scores of 6.5 failed an rtol of 1e-5 on an AVX-512 machine).

Bounds here are worst case in K (rounding errors of one sign); a typical difference is ~sqrt(K) times
smaller, which is the margin that makes them machine-independent. A bug in sharding, a missing
all-reduce or a wrong scale gives O(1) relative differences, far above any of these bounds.

Set ``R1MEGA_TOL_LOG=/path/file.jsonl`` to append every check's observed / allowed to that file
(how much margin each bound has on this machine).
"""

from __future__ import annotations

import json
import os

import torch

EPS32 = torch.finfo(torch.float32).eps  # 2^-23 = 1.19e-7: relative spacing of fp32 numbers
EPS64 = torch.finfo(torch.float64).eps  # 2^-52 = 2.2e-16


def rel_bound(k: int, depth: int = 1, eps: float = EPS32) -> float:
    """Relative difference of two evaluations summing in different orders: depth * k * eps."""
    return depth * k * eps


def scale(t) -> float:
    """The magnitude rounding is relative to: max |value| (at least a tiny positive number)."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return max(float(t.abs().max()), 1e-30) if t.numel() else 1e-30


def _log(what: str, observed: float, allowed: float) -> None:
    path = os.environ.get("R1MEGA_TOL_LOG")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"what": what, "observed": observed, "allowed": allowed,
                                "ratio": observed / allowed if allowed else None}) + "\n")


def assert_within(got, ref, allowed, what: str = "") -> float:
    """max |got - ref| <= allowed, where ``allowed`` is an absolute bound (a float, or a tensor of
    per-element bounds broadcast against ``ref``). Returns the observed max difference."""
    got = torch.as_tensor(got, dtype=torch.float64)
    ref = torch.as_tensor(ref, dtype=torch.float64)
    assert got.shape == ref.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    diff = (got - ref).abs()
    allowed_t = torch.as_tensor(allowed, dtype=torch.float64).expand_as(diff) if diff.numel() else None
    observed = float(diff.max()) if diff.numel() else 0.0
    if diff.numel():
        ratio = diff / allowed_t.clamp_min(1e-300)
        worst = int(ratio.flatten().argmax())
        _log(what, float(diff.flatten()[worst]), float(allowed_t.flatten()[worst]))
        assert bool((diff <= allowed_t).all()), (
            f"{what}: max |diff| {observed:.3e}; worst element {worst}: |diff| {float(diff.flatten()[worst]):.3e} "
            f"> allowed {float(allowed_t.flatten()[worst]):.3e} (got {float(got.flatten()[worst])!r}, "
            f"ref {float(ref.flatten()[worst])!r})")
    return observed


def assert_rel_scale(got, ref, rel: float, what: str = "", ref_scale: float | None = None) -> float:
    """max |got - ref| <= rel * scale, scale = max |ref| unless given (see the module docstring)."""
    s = scale(ref) if ref_scale is None else ref_scale
    return assert_within(got, ref, rel * s, what)


# Chained reductions of one transformer layer, forward: input RMSNorm (mean of squares), QKV projection,
# q.k, the softmax's sum, p.v, the output projection, the second RMSNorm, gate/up projection, down projection.
LAYER_DEPTH = 9


def transformer_rel(*, hidden: int, ffn: int, layers: int, seq: int = 0, vocab: int = 0, tokens: int = 0,
                    extra_per_layer: int = 0) -> tuple[float, float]:
    """(forward, step) relative bounds of a transformer of ``layers`` layers (see the module docstring).

    Forward: D = (LAYER_DEPTH + extra_per_layer) * layers + 2 (final norm, LM / value head), plus 1
    when a softmax over ``vocab`` follows (logprobs, losses); K = the longest reduction, max(hidden,
    ffn, seq, vocab). A training step adds the backward pass (the same depth again) and the weight
    gradients' sums over the step's ``tokens``: D_step = 2 D, K_step = max(K, tokens).
    """
    depth = (LAYER_DEPTH + extra_per_layer) * layers + 2 + (1 if vocab else 0)
    k = max(hidden, ffn, seq, vocab)
    return rel_bound(k, depth), rel_bound(max(k, tokens), 2 * depth)


def sgd_weights_bound(after: torch.Tensor, initial: torch.Tensor, step_rel: float, steps: int = 1,
                      terms_scale: float = 0.0) -> torch.Tensor:
    """Per-element bound on |w_a - w_b| for weights after ``steps`` SGD steps in two layouts.

    Each step's update -lr * g carries the gradient's relative difference ``step_rel`` (of the
    update's scale); a later step's gradient is taken at weights already that far apart, which for a
    stable step (lr * ||Hessian|| <= 1) moves its update by at most the same amount again, so the
    difference after n steps is at most (2^n - 1) * step_rel * max|w_n - w_0| (per tensor). Plus the
    last rounding of w itself, eps * |w| per element (both sides round).

    ``terms_scale``: lr x the sum of |terms| of a gradient that cancels to (nearly) zero, whose
    rounding is relative to its terms rather than to the tiny update (e.g. a reward model's value-head
    bias, whose Bradley-Terry gradient is exactly zero).
    """
    update = max(scale(after.double() - initial.double()), terms_scale)
    return EPS32 * after.double().abs() + (2 ** steps - 1) * step_rel * update


def logit_cap(weights: dict) -> float:
    """An upper bound on |logit| of a (Qwen/Llama-style) HF model for any input, from its weights:
    logit_v = h . E_v with h the final RMSNorm's output, |h|_2 = sqrt(H) * max|gamma| at most, so
    |logit_v| <= sqrt(H) max|gamma| max_v |E_v|_2 (Cauchy-Schwarz). It is also the sum of |terms| of
    the LM head's dot products, the scale their rounding is relative to. ``weights``: HF names."""
    head = weights["lm_head.weight"] if "lm_head.weight" in weights else weights["model.embed_tokens.weight"]
    gamma = weights["model.norm.weight"]
    return float(gamma.numel() ** 0.5 * gamma.double().abs().max() * head.double().norm(dim=1).max())


def hf_weights(path: str) -> dict:
    """The tensors of an HF model directory's safetensors files, by name."""
    import glob

    from safetensors.torch import load_file

    out = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        out.update(load_file(f))
    return out


def logprob_bound(fwd_rel: float, cap: float, vocab: int) -> float:
    """|difference| of two fp32 evaluations of log softmax(logits)[y]: the logits differ by at most
    fwd_rel * cap (cap: logit_cap), the log-sum-exp moves by at most that much again, and its own sum
    of ``vocab`` positive terms rounds to a relative (so, in the log, absolute) vocab * eps."""
    return 2 * fwd_rel * cap + vocab * EPS32


def hf_forward_rel(config, seq: int, vocab_softmax: bool = False) -> tuple[float, float]:
    """transformer_rel for a transformers config: K = max(hidden, every MLP width, MLA's low ranks, seq[, vocab]);
    per layer + 2 for QK-norm (Qwen3), + 3 for an MoE block (router, top-k normalisation, the
    experts' weighted sum), + 5 for MLA (q_a, q_a norm, q_b, kv_a, kv_a norm, kv_b for one QKV)."""
    c = config
    widths = [getattr(c, k, 0) or 0 for k in ("intermediate_size", "moe_intermediate_size",
                                               "shared_expert_intermediate_size", "q_lora_rank", "kv_lora_rank")]
    extra = 0
    if "qwen3" in c.model_type:
        extra += 2
    if getattr(c, "num_experts", None) or getattr(c, "n_routed_experts", None):
        extra += 3
    if getattr(c, "kv_lora_rank", None):
        extra += 5
    return transformer_rel(hidden=c.hidden_size, ffn=max(widths), layers=c.num_hidden_layers, seq=seq,
                           vocab=c.vocab_size if vocab_softmax else 0, extra_per_layer=extra)


def logits_bound(model, seq: int) -> float:
    """|difference| of two fp32 forwards' logits of an HF ``model`` (or its r1mega / vLLM twin) on
    sequences of <= ``seq`` tokens: hf_forward_rel's forward bound x logit_cap (the LM head's scale)."""
    return hf_forward_rel(model.config, seq)[0] * logit_cap(dict(model.state_dict()))


def engine_logprob_bound(model, seq: int, temperature: float = 1.0) -> float:
    """|difference| of log softmax(logits / T)[y] between two fp32 forwards of an HF ``model``'s weights
    (a vLLM engine, the trainer, transformers) on sequences of <= ``seq`` tokens: logprob_bound with
    the logits' bound divided by T (greedy, T = 0, scores at T = 1 as vLLM does)."""
    t = temperature if temperature > 0 else 1.0
    return logprob_bound(hf_forward_rel(model.config, seq)[0], logit_cap(dict(model.state_dict())) / t,
                         model.config.vocab_size)


def adam_cap(weights: dict, optimizer_steps: int, lr: float) -> float:
    """logit_cap of any weights ``optimizer_steps`` Adam steps (peak ``lr``, no weight decay) from
    ``weights``: bias-corrected Adam moves an element by lr |m_hat| / sqrt(v_hat) <= 1.05 lr for the
    first 10 steps (Cauchy-Schwarz over the gradient history, beta 0.9 / 0.999), whatever the
    gradients (1.043 at step 10); so max|gamma| grows by at most n 1.05 lr, an LM-head row's 2-norm by n 1.05 lr sqrt(H)."""
    assert optimizer_steps <= 10, "the 1.05 lr per step bound is for the first 10 Adam steps"
    head = weights["lm_head.weight"] if "lm_head.weight" in weights else weights["model.embed_tokens.weight"]
    gamma = weights["model.norm.weight"]
    h = gamma.numel()
    move = optimizer_steps * 1.05 * lr
    return float(h ** 0.5 * (gamma.double().abs().max() + move) * (head.double().norm(dim=1).max() + move * h ** 0.5))


def run_logprob_bound(model_dir: str, optimizer_steps: int, lr: float, seq: int) -> float:
    """Engine vs trainer (or HF) logprobs of any policy within ``optimizer_steps`` Adam steps of the HF
    model in ``model_dir`` (the initial or the final policy of a run): engine_logprob_bound's two fp32
    forwards, with the LM head's scale from adam_cap."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    return logprob_bound(hf_forward_rel(config, seq)[0], adam_cap(hf_weights(model_dir), optimizer_steps, lr),
                         config.vocab_size)


def linear_logprob_bounds(x: torch.Tensor, w: torch.Tensor, temperature: float = 1.0) -> tuple[float, float]:
    """(logprob, entropy) absolute bounds of an fp32 log softmax(x w^T / T) against another evaluation
    (or the exact value): the logits' dot products over H round to H eps of their terms, whose sum is at
    most cap = max|x_t| max|w_v| / T (Cauchy-Schwarz); the log-sum-exp moves as much again and its sum of V
    positive terms rounds to V eps (relative: absolute in the log). The entropy lse - sum p z adds the
    softmax-weighted sum of V logits up to cap: V eps cap more (and p's own rounding, within the same)."""
    h, v = x.shape[-1], w.shape[0]
    cap = float(x.double().norm(dim=-1).max() * w.double().norm(dim=-1).max()) / temperature
    lp = 2 * h * EPS32 * cap + v * EPS32
    return lp, lp + v * EPS32 * cap
