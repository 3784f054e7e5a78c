"""Core attention through ``torch.nn.functional.scaled_dot_product_attention`` for Megatron's
local (non-Transformer-Engine) layers.

Megatron-Core's local ``DotProductAttention`` materialises the (B x heads, S, S) score matrix
(``baddbmm`` -> masked softmax -> ``bmm``) and keeps it for backward: O(S^2) memory per layer and
three passes over it. SDPA dispatches to a fused kernel instead (FlashAttention or memory-efficient
attention on CUDA, the flash kernel on CPU), with grouped-query heads handled in the kernel
(``enable_gqa``, no repeated K/V). Same math:

    softmax(Q K^T * scale + mask) V,  scale = softmax_scale or 1 / sqrt(head_dim)

Masks follow Megatron's convention (bool, True = blocked): ``None`` means causal (bottom-right
aligned when there are more keys than queries); a given mask (the block-diagonal mask of packed
rows) already holds causality. Used wherever Transformer Engine is absent (``model.attention``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule


class SDPAttention(MegatronModule):
    """Drop-in ``core_attention`` for Megatron's local layer spec: (Sq, B, heads, D) queries and
    (Sk, B, groups, D) keys/values of this tensor-parallel rank -> (Sq, B, heads * D)."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                 softmax_scale=None, cp_comm_type=None, pg_collection=None):
        super().__init__(config=config)
        if getattr(config, "softmax_type", "vanilla") != "vanilla":
            raise NotImplementedError(f"model.attention=sdpa supports softmax_type 'vanilla', not "
                                      f"{config.softmax_type!r}; set model.attention=megatron_local")
        if getattr(config, "window_size", None) is not None:
            raise NotImplementedError("model.attention=sdpa has no sliding window; set model.attention=megatron_local")
        if config.context_parallel_size > 1:
            raise NotImplementedError("context parallelism needs Transformer Engine's attention")
        self.layer_number = layer_number
        self.softmax_scale = softmax_scale
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention takes padded or mask-packed rows (THD packing needs "
                                      "Transformer Engine) and no attention bias")
        sq, b, heads, _ = query.shape
        sk = key.shape[0]
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # (B, heads|groups, S, D)
        mask, causal = None, False
        if attention_mask is not None:
            mask = ~attention_mask                                        # SDPA: True = attend
        elif sq == sk:
            causal = True
        else:  # more keys than queries (a KV cache): query i sees keys up to sk - sq + i
            mask = torch.ones(sq, sk, dtype=torch.bool, device=query.device).tril(sk - sq)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                             dropout_p=self.dropout if self.training else 0.0,
                                             scale=self.softmax_scale, enable_gqa=k.shape[1] != heads)
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)                 # (Sq, B, heads * Dv)
