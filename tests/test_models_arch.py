"""One reader of HF ``config.json`` for the model builder and the planner: both see the same
model, that model matches the structure transformers builds from the same config, and its
parameter count is the count of the transformers model."""

import json
import os
import subprocess
import sys

import pytest
import torch

from r1mega.config import ConfigError, config_from_dict
from r1mega.models.arch import FAMILIES, read_hf_config
from r1mega.models.params import param_counts
from tests.hf_models import FAMILIES as DENSE
from tests.hf_models import MOE_FAMILIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = {
    **DENSE, **MOE_FAMILIES,
    "mistral": dict(cls="Mistral", vocab_size=211, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, sliding_window=None, tie_word_embeddings=False),
    # Qwen2-MoE with every second layer sparse (decoder_sparse_step) and untied embeddings
    "qwen2_moe_step2": dict(MOE_FAMILIES["qwen2_moe"], num_hidden_layers=4, decoder_sparse_step=2,
                            tie_word_embeddings=False),
    # DeepSeek-V2: MLA without q LoRA, softmax group-limited routing, two shared experts
    "deepseek_v2": dict(cls="DeepseekV2", vocab_size=199, hidden_size=64, intermediate_size=96,
                        moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=2,
                        first_k_dense_replace=1, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                        q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=24,
                        topk_method="group_limited_greedy", n_group=2, topk_group=1, tie_word_embeddings=False),
}


def _hf(name: str, root) -> tuple[str, torch.nn.Module]:
    """The config.json transformers writes for ``TINY[name]`` (in a directory), and its model on
    the meta device (shapes only)."""
    import transformers

    spec = dict(TINY[name])
    cls = spec.pop("cls")
    config = getattr(transformers, f"{cls}Config")(**spec)
    path = os.path.join(str(root), name)
    config.save_pretrained(path)
    with torch.device("meta"):
        model = getattr(transformers, f"{cls}ForCausalLM")(config)
    return path, model


def _hf_layout(model) -> dict:
    """What the transformers model is, read off its modules."""
    layers = model.model.layers
    attn = layers[0].self_attn
    out = dict(moe_layers=[int(hasattr(layer.mlp, "experts")) for layer in layers],
               tie=model.lm_head.weight is model.model.embed_tokens.weight,
               vocab=model.model.embed_tokens.weight.shape[0], layers=len(layers))
    if hasattr(attn, "kv_a_proj_with_mqa"):
        out.update(q_lora=getattr(attn, "q_a_proj", None) is not None,
                   kv_a=attn.kv_a_proj_with_mqa.weight.shape[0], o_in=attn.o_proj.weight.shape[1])
    else:
        out.update(q=attn.q_proj.weight.shape[0], kv=attn.k_proj.weight.shape[0], bias=attn.q_proj.bias is not None,
                   qk_norm=hasattr(attn, "q_norm"))
    moe = next((layer.mlp for layer in layers if hasattr(layer.mlp, "experts")), None)
    if moe is not None:
        router = moe.gate.weight
        out["experts"] = router.shape[0]
    return out


@pytest.mark.parametrize("name", sorted(TINY))
def test_planner_and_builder_read_the_same_model(name, tmp_path):
    from r1mega.plan.cli import model_spec_for

    path, model = _hf(name, tmp_path)
    built = read_hf_config(path)                                     # what r1mega.models.load_hf builds
    cfg = config_from_dict({"model": {"hf_path": path}})
    planned = model_spec_for(cfg, None)                              # what `r1mega plan` sizes
    assert planned.to_dict() == built.to_dict()
    assert planned.family in FAMILIES and built.family == name.split("_step")[0].replace("mistral", "llama")

    # the counts are the transformers model's
    n = sum(p.numel() for p in model.parameters())
    assert param_counts(planned).total == n == built.num_params()

    # and the sizes are the ones transformers built
    hf = _hf_layout(model)
    assert (hf["layers"], hf["vocab"], hf["tie"]) == (built.num_layers, built.vocab_size, built.tie_embeddings)
    assert hf["moe_layers"] == (built.moe_layers if built.is_moe else [0] * built.num_layers)
    if built.is_moe:
        assert hf["experts"] == built.num_experts
    if built.is_mla:
        assert hf["q_lora"] == (built.q_lora_rank > 0)
        assert hf["kv_a"] == built.kv_lora_rank + built.qk_rope_head_dim
        assert hf["o_in"] == built.num_heads * built.v_head_dim
    else:
        assert hf["q"] == built.num_heads * built.head_dim and hf["kv"] == built.num_kv_heads * built.head_dim
        assert (hf["bias"], hf["qk_norm"]) == (built.qkv_bias, built.qk_norm)


def test_a_family_the_builder_cannot_train_is_refused_when_the_config_is_validated(tmp_path):
    from r1mega.models import build

    path, _ = _hf("deepseek_v2", tmp_path)
    arch = read_hf_config(path)
    assert not arch.trainable and all(FAMILIES[f].trainable for f in FAMILIES if f != "deepseek_v2")
    with pytest.raises(ConfigError, match=r"deepseek_v2 models can be sized \(r1mega plan\) but not built"):
        config_from_dict({"model": {"hf_path": path}}).validate(world_size=1)
    with pytest.raises(ConfigError, match="deepseek_v2 models can be sized"):
        build(arch, None, None)


def test_planner_imports_no_torch_megatron_vllm_or_triton(tmp_path):
    """`r1mega plan` plans a model from its config.json with nothing heavy imported."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=1000,
                                    hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                                    num_attention_heads=8, num_key_value_heads=4)))
    code = (f"import sys\nfrom r1mega.plan.cli import make_plan\n"
            f"cfg, plan = make_plan(None, ['model.hf_path={tmp_path}'], world_size=1)\n"
            f"assert plan.counts.total > 0\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in "
            f"('torch', 'megatron', 'vllm', 'triton', 'transformer_engine', 'r1mega_kernels')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": ROOT, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_config_json_at_odds_with_itself_is_refused_by_name(tmp_path):
    cfg = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 2, "intermediate_size": 96, "vocab_size": 128,
           "layer_types": ["full_attention", "full_attention"]}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match=r"config\.json: num_hidden_layers \(1\) does not match the 2 entries of "
                                          r"layer_types"):
        read_hf_config(str(path))
    cfg["layer_types"] = ["full_attention"]
    path.write_text(json.dumps(cfg))
    assert read_hf_config(str(path)).num_layers == 1
