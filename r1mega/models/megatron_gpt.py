"""Build a Megatron-Core ``GPTModel`` for an HF architecture on the current parallel layout.

Model code never branches on the layout: Megatron's parallel_state (set up once by
``r1mega.parallel.init``) tells each layer its shard; here we only translate the HF
architecture into a ``TransformerConfig`` and a layer spec.
"""

from __future__ import annotations

import functools

import torch

from r1mega.config.base import ConfigError
from r1mega.config.sections import ModelConfig
from r1mega.models.arch import ModelArch
from r1mega.parallel.layout import Layout

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def have_te() -> bool:
    try:
        import transformer_engine  # noqa: F401
        return torch.cuda.is_available()
    except Exception:
        return False


def transformer_config(arch: ModelArch, model_cfg: ModelConfig, layout: Layout):
    """The Megatron ``TransformerConfig`` equivalent to the HF architecture."""
    from megatron.core.transformer import MLATransformerConfig, TransformerConfig

    dtype = _DTYPES[model_cfg.dtype]
    if model_cfg.fp8 and not have_te():
        raise ConfigError("model.fp8=true needs Transformer Engine and a CUDA GPU (Hopper or newer); "
                          "install the gpu extra (`pip install r1mega[gpu]`) or set model.fp8=false")
    kw = {}
    if model_cfg.fp8:
        kw.update(fp8="hybrid", fp8_recipe="delayed", fp8_param=False)
    if model_cfg.recompute:
        kw.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    if layout.virtual_pipeline:
        kw.update(virtual_pipeline_model_parallel_size=layout.virtual_pipeline)
    if layout.first_stage_layers is not None:
        kw.update(num_layers_in_first_pipeline_stage=layout.first_stage_layers)
    if layout.last_stage_layers is not None:
        kw.update(num_layers_in_last_pipeline_stage=layout.last_stage_layers)
    from r1mega.models.moe import megatron_moe_kwargs
    kw.update(megatron_moe_kwargs(arch, layout, use_te=have_te()))
    config_cls = TransformerConfig
    if arch.is_mla:  # DeepSeek multi-head latent attention; q_layernorm / kv_layernorm are its latent norms
        config_cls = MLATransformerConfig
        kw.update(q_lora_rank=arch.q_lora_rank or None, kv_lora_rank=arch.kv_lora_rank,
                  qk_head_dim=arch.qk_nope_head_dim, qk_pos_emb_head_dim=arch.qk_rope_head_dim,
                  v_head_dim=arch.v_head_dim, rotary_base=model_cfg.rope_theta or arch.rope_theta)
        y = arch.rope_yarn
        if y:
            kw.update(rope_type="yarn", rotary_scaling_factor=y["factor"], beta_fast=y["beta_fast"],
                      beta_slow=y["beta_slow"], original_max_position_embeddings=y["original_max_position_embeddings"],
                      mscale=y["mscale"], mscale_all_dim=y["mscale_all_dim"])
        else:
            kw.update(rope_type="rope", rotary_scaling_factor=1.0, mscale=1.0, mscale_all_dim=0.0)
    cfg = config_cls(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_heads,
        num_query_groups=arch.num_kv_heads,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=torch.nn.functional.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        qk_layernorm=arch.qk_norm or arch.is_mla,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        tensor_model_parallel_size=layout.tensor,
        pipeline_model_parallel_size=layout.pipeline,
        context_parallel_size=layout.context,
        expert_model_parallel_size=layout.expert,
        sequence_parallel=layout.sequence_parallel,
        params_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        pipeline_dtype=dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        gradient_accumulation_fusion=False,
        apply_rope_fusion=False,
        batch_p2p_comm=False,  # gloo needs it; NCCL is fine either way
        deallocate_pipeline_outputs=False,
        **kw,
    )
    return cfg


def layer_spec(arch: ModelArch, cfg=None, vp_stage: int | None = None, attention: str = "sdpa"):
    """Transformer Engine layers where TE and a GPU exist, Megatron's local layers elsewhere, with
    their core attention per ``attention`` (``model.attention``: sdpa, see :mod:`sdpa_attention`,
    or megatron_local; MLA keeps its own, see :func:`mla_core_attention`).

    MoE models get a block spec (this stage's layers, MoE or dense per ``arch.moe_layers``).
    """
    spec = _layer_spec(arch, cfg, vp_stage)
    if have_te() or arch.is_mla or attention == "megatron_local":
        return spec
    from r1mega.models.sdpa_attention import SDPAttention
    for layer in getattr(spec, "layer_specs", [spec]):
        layer.submodules.self_attention.submodules.core_attention = SDPAttention
    return spec


def _layer_spec(arch: ModelArch, cfg=None, vp_stage: int | None = None):
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if arch.is_moe:
        block = specs.get_gpt_decoder_block_spec(cfg, use_transformer_engine=have_te(), normalization="RMSNorm",
                                                 vp_stage=vp_stage)
        if arch.is_mla and not have_te():
            # Local MLA (megatron-core 0.16): the core attention needs k/v channels (see
            # mla_core_attention); the latent down-projections are replicated over TP, as the TE
            # spec has them. As TP-split ColumnParallelLinears (the local spec's choice) the shared
            # RoPE key k_pos_emb is all-gathered over TP and its gradient, which each rank gets
            # from its own heads only, is split instead of summed: measured at TP=2 + SP on the
            # tiny DeepSeek-V3, the RoPE rows of kv_a_proj_with_mqa got wrong gradients.
            from megatron.core.post_training.modelopt.layers import Linear as ReplicatedLinear
            for spec in block.layer_specs:
                attn = spec.submodules.self_attention.submodules
                attn.core_attention = mla_core_attention()
                attn.linear_q_down_proj = attn.linear_kv_down_proj = ReplicatedLinear
        return block
    if have_te():
        return specs.get_gpt_layer_with_transformer_engine_spec(qk_layernorm=arch.qk_norm)
    return specs.get_gpt_layer_local_spec(qk_layernorm=arch.qk_norm, normalization="RMSNorm")


@functools.cache
def mla_core_attention():
    """Megatron's local ``DotProductAttention`` for multi-head latent attention.

    megatron-core 0.16's ``MLASelfAttention`` builds its core attention with ``k_channels`` /
    ``v_channels`` (q/k heads of qk_nope + qk_rope dims, v heads of v_head_dim), which only
    Transformer Engine's attention accepts: with the local spec it fails with ``TypeError:
    DotProductAttention.__init__() got an unexpected keyword argument 'k_channels'``. The local
    attention's math works for any head dims (shapes come from the tensors; MLA passes its own
    softmax scale); only its output reshape uses ``kv_channels``, set here to ``v_channels``.
    """
    import copy

    from megatron.core.transformer.dot_product_attention import DotProductAttention

    class MLADotProductAttention(DotProductAttention):
        def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                     softmax_scale=None, k_channels=None, v_channels=None, cp_comm_type=None, pg_collection=None):
            config = copy.copy(config)
            # context (s, b, heads * v_head_dim); Attention.__init__ first builds one without channels
            config.kv_channels = v_channels or config.v_head_dim
            super().__init__(config, layer_number, attn_mask_type, attention_type, attention_dropout,
                             softmax_scale, cp_comm_type, pg_collection)

    return MLADotProductAttention


def build_gpt(arch: ModelArch, model_cfg: ModelConfig, layout: Layout, vp_stage: int | None = None):
    """One model chunk of this rank (several with interleaved pipelines: call per ``vp_stage``)."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel

    cfg = transformer_config(arch, model_cfg, layout)
    pre = ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage)
    post = ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage)
    max_len = max(model_cfg.max_seq_len, 2)
    model = GPTModel(
        config=cfg,
        transformer_layer_spec=layer_spec(arch, cfg, vp_stage, attention=model_cfg.attention),
        vocab_size=layout.padded_vocab_size,
        max_sequence_length=max_len,
        pre_process=pre,
        post_process=post,
        share_embeddings_and_output_weights=arch.tie_embeddings,
        position_embedding_type="rope",
        rotary_base=int(model_cfg.rope_theta or arch.rope_theta),
        vp_stage=vp_stage,
    )
    model.r1mega_arch = arch  # the real vocab size etc. travel with the model
    if arch.is_moe:
        from r1mega.models.moe import install_router_stats
        from r1mega.models.routing_replay import install_taps
        install_router_stats(model)
        install_taps(model, [i for i, moe in enumerate(arch.moe_layers) if moe], recompute=model_cfg.recompute)
    return model


def build_model_chunks(arch: ModelArch, model_cfg: ModelConfig, layout: Layout) -> list:
    """All model chunks of this rank: one, or ``virtual_pipeline`` of them."""
    if layout.virtual_pipeline:
        return [build_gpt(arch, model_cfg, layout, vp_stage=i) for i in range(layout.virtual_pipeline)]
    return [build_gpt(arch, model_cfg, layout)]
