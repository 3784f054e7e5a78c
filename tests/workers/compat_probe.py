"""Worker: exercise one megatron-core code path on CPU, with some compat workarounds left out.

    python compat_probe.py CHECK[,CHECK...] [SKIP ...]     exit 0 = the path ran; 1 = it raised (printed)
"""

import os
import sys
import traceback

import torch


def tiny_config(**kw):
    from megatron.core.transformer import TransformerConfig

    base = dict(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2, ffn_hidden_size=96,
                use_cpu_initialization=True, normalization="RMSNorm", gated_linear_unit=True,
                activation_func=torch.nn.functional.silu, add_bias_linear=False, hidden_dropout=0.0,
                attention_dropout=0.0, bias_activation_fusion=False, masked_softmax_fusion=False,
                persist_layer_norm=False, bias_dropout_fusion=False, gradient_accumulation_fusion=False,
                apply_rope_fusion=False)
    base.update(kw)
    return TransformerConfig(**base)


def tiny_gpt(cfg, **spec_kw):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    return GPTModel(config=cfg, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm", **spec_kw),
                    vocab_size=97, max_sequence_length=32, position_embedding_type="rope")


def check_seed():
    from megatron.core.tensor_parallel import get_cuda_rng_tracker, model_parallel_cuda_manual_seed

    model_parallel_cuda_manual_seed(7)
    with get_cuda_rng_tracker().fork():
        torch.rand(3)


def check_forward():
    model = tiny_gpt(tiny_config())
    ids = torch.randint(0, 97, (2, 9))
    out = model(ids, torch.arange(9).expand(2, -1), attention_mask=None)
    out.float().sum().backward()


def check_optimizer():
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    cfg = tiny_config()
    model = DistributedDataParallel(cfg, DistributedDataParallelConfig(use_distributed_optimizer=True),
                                    tiny_gpt(cfg))
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-3, clip_grad=1.0,
                                                 use_distributed_optimizer=True), [model])
    ids = torch.randint(0, 97, (2, 9))
    model(ids, torch.arange(9).expand(2, -1), attention_mask=None).sum().backward()
    model.finish_grad_sync()
    ok, grad_norm, _ = opt.step()
    assert ok and grad_norm > 0


def check_sp_norm():
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    cfg = tiny_config()
    cfg.sequence_parallel = True  # as a TP>1 config has it (TransformerConfig refuses SP at TP=1)
    WrappedTorchNorm(cfg, 64)


def check_moe():
    cfg = tiny_config(num_moe_experts=4, moe_router_topk=2, moe_grouped_gemm=False,
                      moe_token_dispatcher_type="alltoall", moe_aux_loss_coeff=0.01)
    model = tiny_gpt(cfg, num_experts=4, moe_grouped_gemm=False)
    ids = torch.randint(0, 97, (2, 9))
    model(ids, torch.arange(9).expand(2, -1), attention_mask=None).sum().backward()


def check_no_dynamo():
    """Megatron's modules load (and the tiny GPT runs) without pulling in TorchDynamo / Inductor."""
    check_forward()
    import megatron.core.models.gpt  # noqa: F401
    import megatron.core.optimizer  # noqa: F401
    import megatron.core.pipeline_parallel  # noqa: F401

    if "torch._dynamo" in sys.modules:
        raise RuntimeError("TorchDynamo was imported: megatron's jit_fuser is torch.compile")


def main():
    check, *skip = sys.argv[1:]
    from r1mega.parallel import compat

    compat.apply(skip=tuple(skip))
    import torch.distributed as dist
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"tcp://127.0.0.1:{os.environ['PORT']}")
    ps.initialize_model_parallel(1, 1)
    try:
        if check != "seed" and "rng_tracker" not in skip:
            model_parallel_cuda_manual_seed(1)
        for name in check.split(","):
            globals()[f"check_{name}"]()
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
