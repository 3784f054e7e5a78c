"""r1mega_kernels: fused LM-head log-probability / entropy and GRPO loss (Triton + torch).

Public API (see ``api.py``): ``linear_logprob``, ``linear_grpo_loss``, ``linear_nll_loss`` (SFT),
``grpo_loss``, each with
``backend="auto" | "triton" | "torch_chunked" | "eager"`` (auto: triton on CUDA, else
torch_chunked). References: ``linear_logprob_eager``, ``grpo_loss_eager``,
``linear_grpo_loss_eager`` (eager torch, run them in float64 as test oracles).
"""

from .api import grpo_loss, linear_grpo_loss, linear_logprob, linear_nll_loss
from .grpo_math import AGGREGATIONS, token_weights
from .reference import grpo_loss_eager, linear_grpo_loss_eager, linear_logprob_eager
from ._common import BACKENDS, resolve_backend

__all__ = [
    "linear_logprob", "linear_grpo_loss", "linear_nll_loss", "grpo_loss",
    "linear_logprob_eager", "linear_grpo_loss_eager", "grpo_loss_eager",
    "token_weights", "AGGREGATIONS", "BACKENDS", "resolve_backend",
]
