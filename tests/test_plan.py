"""`r1mega plan`: parameter counts against published sizes and transformers, the memory model
against a breakdown computed by hand, and the command's layout checks and verdicts."""

import argparse
import json
import os

import pytest

from r1mega.config import ConfigError, config_from_dict
from r1mega.plan import estimate as E
from r1mega.models.arch import read_hf_config
from r1mega.models.params import param_counts

# The published config.json values (only the keys that size the model).
QWEN25_7B = dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=152064, hidden_size=3584,
                 intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                 tie_word_embeddings=False)
LLAMA3_8B = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
                 intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                 tie_word_embeddings=False)
QWEN3_30B_A3B = dict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", vocab_size=151936,
                     hidden_size=2048, intermediate_size=6144, moe_intermediate_size=768, num_hidden_layers=48,
                     num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
                     num_experts_per_tok=8, decoder_sparse_step=1, mlp_only_layers=[], tie_word_embeddings=False)
QWEN15_MOE_A27B = dict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", vocab_size=151936,
                       hidden_size=2048, intermediate_size=5632, moe_intermediate_size=1408,
                       shared_expert_intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                       num_key_value_heads=16, num_experts=60, num_experts_per_tok=4, decoder_sparse_step=1,
                       mlp_only_layers=[], tie_word_embeddings=False)
DEEPSEEK_V3 = dict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3", vocab_size=129280,
                   hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=61,
                   num_attention_heads=128, num_key_value_heads=128, n_routed_experts=256, n_shared_experts=1,
                   num_experts_per_tok=8, first_k_dense_replace=3, moe_layer_freq=1, q_lora_rank=1536,
                   kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, n_group=8,
                   topk_group=4, tie_word_embeddings=False)
DEEPSEEK_V2_LITE = dict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2", vocab_size=102400,
                        hidden_size=2048, intermediate_size=10944, moe_intermediate_size=1408, num_hidden_layers=27,
                        num_attention_heads=16, num_key_value_heads=16, n_routed_experts=64, n_shared_experts=2,
                        num_experts_per_tok=6, first_k_dense_replace=1, moe_layer_freq=1, q_lora_rank=None,
                        kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, n_group=1,
                        topk_group=1, tie_word_embeddings=False)


# ---------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize("cfg, total_b, active_b, non_embedding_b", [
    (QWEN25_7B, 7.62, None, 6.53),         # model card: 7.61B (truncated), 6.53B non-embedding
    (LLAMA3_8B, 8.03, None, None),
    (QWEN3_30B_A3B, 30.5, 3.3, 29.9),      # model card: 30.5B total, 3.3B activated, 29.9B non-embedding
    (QWEN15_MOE_A27B, 14.3, 2.7, None),    # model card: 14.3B total, 2.7B activated
])
def test_published_parameter_counts(cfg, total_b, active_b, non_embedding_b):
    """Model cards round or truncate to the digits they print: within one unit of the last one."""
    c = param_counts(read_hf_config(cfg))
    close = lambda n, published, unit: abs(n / 1e9 - published) < unit  # noqa: E731
    unit = 0.01 if total_b < 10 else 0.1
    assert close(c.total, total_b, unit)
    if active_b is not None:
        assert close(c.active, active_b, 0.1) and c.active < c.total / 4
    else:
        assert c.active == c.total
    if non_embedding_b is not None:
        assert close(c.total - c.embedding - c.lm_head, non_embedding_b, unit)


def test_deepseek_v3_by_hand():
    """671B total, ~37B activated (DeepSeek-V3 report), from the MLA / MoE formulas by hand."""
    h, L, V = 7168, 61, 129280
    mla = (h * 1536 + 1536 + 1536 * 128 * (128 + 64)      # q down, q norm, q up
           + h * (512 + 64) + 512 + 512 * 128 * (128 + 128)  # kv down (+ rope key), kv norm, kv up
           + 128 * 128 * h)                                 # output projection
    assert mla == 187_107_328
    expert = 3 * h * 2048
    dense_layer = mla + 3 * h * 18432 + 2 * h
    moe_layer = mla + 256 * expert + expert + 256 * h + 2 * h     # routed, shared, router, norms
    total = 3 * dense_layer + 58 * moe_layer + 2 * V * h + h
    active = total - 58 * (256 - 8) * expert
    c = param_counts(read_hf_config(DEEPSEEK_V3))
    assert (c.total, c.active) == (total, active)
    assert round(c.total / 1e9) == 671 and 36.5e9 < c.active < 38e9
    assert c.experts == 58 * 256 * expert


@pytest.mark.parametrize("cfg", [QWEN25_7B, LLAMA3_8B, QWEN3_30B_A3B, QWEN15_MOE_A27B, DEEPSEEK_V3, DEEPSEEK_V2_LITE],
                         ids=["qwen2.5-7b", "llama3-8b", "qwen3-30b-a3b", "qwen1.5-moe", "deepseek-v3", "dsv2-lite"])
def test_counts_equal_transformers(cfg):
    """The model transformers builds from the same config (on the meta device: no memory) has
    exactly as many parameters."""
    import torch
    import transformers

    hf = transformers.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(hf)
    assert param_counts(read_hf_config(cfg)).total == sum(p.numel() for p in model.parameters())


def test_moe_layer_patterns():
    s = read_hf_config(DEEPSEEK_V3)
    assert s.moe_layers[:4] == [0, 0, 0, 1] and sum(s.moe_layers) == 58
    q = read_hf_config(dict(QWEN3_30B_A3B, decoder_sparse_step=2, mlp_only_layers=[1]))
    assert [i for i, m in enumerate(q.moe_layers) if m][:3] == [3, 5, 7]   # (i + 1) % 2 == 0, not layer 1


def test_bad_hf_configs_name_the_key():
    with pytest.raises(ConfigError, match="unsupported model"):
        read_hf_config({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    with pytest.raises(ConfigError, match="missing key 'kv_lora_rank'"):
        read_hf_config({k: v for k, v in DEEPSEEK_V3.items() if k != "kv_lora_rank"})
    with pytest.raises(ConfigError, match="num_experts_per_tok .9. must be in"):
        read_hf_config(dict(QWEN3_30B_A3B, num_experts=8, num_experts_per_tok=9))
    with pytest.raises(ConfigError, match="hidden_size must be a non-negative integer"):
        read_hf_config(dict(LLAMA3_8B, hidden_size="4096"))


# ---------------------------------------------------------------------------- formulas
def test_pipeline_rank_layers_and_in_flight_micro_batches():
    assert E.rank_layers(8, 2, None, 1) == [4, 5, 6, 7]
    assert E.rank_layers(8, 2, 2, 0) == [0, 1, 4, 5] and E.rank_layers(8, 2, 2, 1) == [2, 3, 6, 7]
    assert [E.in_flight_chunks(4, None, r, 8) for r in range(4)] == [4, 3, 2, 1]
    assert E.in_flight_chunks(4, None, 0, 2) == 2
    # interleaved, first stage: L/p layers x p micro-batches x (1 + (p-1)/(p v))  (Korthikanti et al. 2022)
    p, v = 4, 2
    assert E.in_flight_chunks(p, v, 0, 8) == p * (1 + (p - 1) / (p * v))


def test_activation_bookkeeping_reduces_to_korthikanti():
    """MHA with a 4h GeLU MLP (fc1 output 4h + fc2 input 4h where SwiGLU has 2f + f), plus the
    two dropout masks r1mega's layers do not have, is the paper's 34 s b h per layer; the
    unfused attention term is its 5 a s^2 b without the dropout mask and dropout output (2 a s^2 b)."""
    h, a, s = 512, 8, 1024
    spec = read_hf_config(dict(LLAMA3_8B, hidden_size=h, num_attention_heads=a, num_key_value_heads=a,
                           intermediate_size=4 * h))
    act = E.layer_activation_elems(spec, 0, flash=True)
    elems = act.replicated + act.split
    gelu_mlp = elems - 3 * 4 * h + 2 * 4 * h
    assert 2 * gelu_mlp + 2 * h == 34 * h                  # bytes: 2 per 16-bit element, masks 1 byte each
    unfused = E.layer_activation_elems(spec, 0, flash=False, seq_len=s)
    assert 2 * (unfused.split - act.split) == 2 * a * s
    # tensor + sequence parallel divides everything by t; TP alone leaves the norm tensors whole
    t = 4
    full = act.bytes_per_token(2, 1, False)
    assert act.bytes_per_token(2, t, True) == pytest.approx(full / t)
    assert act.bytes_per_token(2, t, False) == pytest.approx(2 * act.replicated + (2 * act.split + act.fp32_split) / t)


def test_kv_cache_per_token():
    # Llama-3-8B: 2 (K, V) x 8 KV heads x 128 x 32 layers x 2 bytes = 128 KiB per token
    assert E.kv_bytes_per_token(read_hf_config(LLAMA3_8B), 1, 2) == 128 * 1024
    assert E.kv_bytes_per_token(read_hf_config(LLAMA3_8B), 8, 2) == 16 * 1024
    assert E.kv_bytes_per_token(read_hf_config(LLAMA3_8B), 16, 2) == 16 * 1024     # KV heads replicated past 8
    # DeepSeek-V3 MLA: (512 latent + 64 rope) x 61 layers x 2 bytes, the same on every TP rank
    assert E.kv_bytes_per_token(read_hf_config(DEEPSEEK_V3), 32, 2) == 576 * 61 * 2


def test_optimizer_bytes():
    assert E.optimizer_bytes_per_param("adam", "bfloat16") == 12
    assert E.optimizer_bytes_per_param("adam", "float32") == 8
    assert E.optimizer_bytes_per_param("sgd", "bfloat16", momentum=0.9) == 8
    assert E.optimizer_bytes_per_param("sgd", "float32") == 0


# ---------------------------------------------------------------------------- a plan by hand
SMALL = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=1000, hidden_size=256,
             intermediate_size=512, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
             tie_word_embeddings=False)


def _plan(cfg_dict, hf, world, **kw):
    from r1mega.plan.cli import validate_layout

    cfg = config_from_dict(cfg_dict)
    spec = read_hf_config(hf)
    return cfg, E.plan_memory(cfg, spec, validate_layout(cfg, spec, world), **kw)


def test_small_dense_breakdown_by_hand():
    """TP 2 x PP 2 x DP 2 on 8 GPUs, bf16, Adam with the distributed optimizer, a reference model."""
    cfg, plan = _plan(dict(
        model=dict(dtype="bfloat16", max_seq_len=512), parallel=dict(tensor=2, pipeline=2, rollout_tensor=2),
        algorithm=dict(kl_coef=0.1, group_size=4), data=dict(prompts_per_step=8, max_prompt_len=256),
        rollout=dict(max_new_tokens=256, gpu_memory_utilization=0.5, sync_bucket_mb=64),
        trainer=dict(micro_batch_tokens=1024)), SMALL, 8, gpu_mem_gb=80, reserve_gb=4)
    GiB = 1 << 30
    # per layer: attention h*(q + 2kv) + q*h = 256*512 + 256*256, MLP 3*256*512, two norms of 256
    layer_tp, layer_norms = 256 * 512 + 256 * 256 + 3 * 256 * 512, 2 * 256
    vocab_shard = 500 * 256                                           # 1000 rows / TP 2
    rank0 = 2 * (layer_tp // 2 + layer_norms) + vocab_shard            # layers 0-1 + embedding
    rank1 = 2 * (layer_tp // 2 + layer_norms) + 256 + vocab_shard      # layers 2-3 + final norm + output layer
    # one layer stores per token: norms' in/out 4h (whole on each TP rank without SP), Q a*d + K, V g*d
    # + attention output a*d + SwiGLU 3f (split over TP), in 2-byte elements, + fp32 LSE 4a / TP
    per_tok_layer = 2 * 4 * 256 + 2 * (256 + 2 * 128 + 256 + 3 * 512) / 2 + 4 * 8 / 2
    assert per_tok_layer == 4368
    # 8 prompts x 4 samples x 512 tokens / DP 2 = 8 micro-batches of 1024: rank 0 holds 2, rank 1 holds 1
    act0 = 1024 * 2 * per_tok_layer * 2
    act1 = 1024 * (2 * per_tok_layer + 2 * 2 * 256)                    # + final norm in/out
    head1 = 4 * 1024 * 500                                              # fused: fp32 tile of the shard
    engine_w = 2 * (4 * (layer_tp // 2 + layer_norms) + 2 * 1000 * 256 // 2 + 256)
    engine_act = 16384 * 2 * (4 * 256 + 3 * 512 / 2) + 1024 * 1000 * 4 * 3
    state = lambda n: n * (2 + 4 + 12 / 2 + 2)                        # noqa: E731  params, grads, Adam/DP, ref

    reserve, budget = 4 * GiB, 0.5 * 80 * GiB
    by = {it.key: it for it in plan.items}
    assert plan.pipeline_rank == 1                                      # its resident state is the larger
    assert plan.params.total == rank1
    assert by["policy_params"].bytes("train") == 2 * rank1
    assert by["grads"].bytes("train") == 4 * rank1
    assert by["optimizer"].bytes("train") == 12 * rank1 / 2
    assert by["reference"].bytes("train") == 2 * rank1
    assert by["activations"].bytes("train") == act1
    assert by["lm_head"].bytes("train") == head1
    assert plan.info["lm_head_eager"] == 14 * 1024 * 500
    assert by["vllm_weights"].bytes("rollout") == engine_w
    assert by["vllm_activations"].bytes("rollout") == engine_act
    assert by["kv_cache"].bytes("rollout") == budget - engine_w - engine_act
    assert plan.info["kv_bytes_per_token"] == 2 * 2 * 32 * 4 * 2       # K, V x 2 heads per GPU x d 32 x 4 layers
    assert plan.totals == pytest.approx({
        "rollout": state(rank1) + reserve + budget,
        "sync": state(rank1) + reserve + engine_w + 2 * 64 * 2**20,
        "train": state(rank1) + reserve + act1 + head1})
    assert plan.by_rank[0]["train"] == pytest.approx(state(rank0) + reserve + act0)
    assert plan.fits and not plan.problems


def test_knobs_named_by_the_verdict_fix_the_plan():
    base = dict(model=dict(dtype="bfloat16", max_seq_len=4096), parallel=dict(tensor=2, rollout_tensor=2),
                algorithm=dict(kl_coef=0.001), data=dict(prompts_per_step=64, max_prompt_len=512),
                rollout=dict(max_new_tokens=3584, gpu_memory_utilization=0.7), trainer=dict(micro_batch_tokens=16384))
    _, plan = _plan(base, QWEN25_7B, 8)
    assert not plan.fits
    rollout_fix = [p for p in plan.problems if "lower rollout.gpu_memory_utilization" in p]
    train_fix = [p for p in plan.problems if "model.recompute=true" in p]
    assert rollout_fix and train_fix, plan.problems
    util = float(rollout_fix[0].split("to <= ")[1].split()[0])
    fixed = dict(base, model=dict(base["model"], recompute=True),
                 rollout=dict(base["rollout"], gpu_memory_utilization=util))
    _, plan = _plan(fixed, QWEN25_7B, 8)
    assert plan.fits, plan.problems
    # the engine cannot fit beside a trainer that fills the GPU: the verdict names the knobs, biggest first
    _, plan = _plan(dict(fixed, parallel=dict(tensor=1, rollout_tensor=1, distributed_optimizer=False)), LLAMA3_8B, 8)
    assert not plan.fits and len(plan.problems) == 1, plan.problems
    knobs = plan.problems[0].split(": ", 1)[1].split("; or ")
    assert "trainer state alone" in plan.problems[0]
    assert knobs[0] == f"parallel.distributed_optimizer=true (optimizer {12 * 8_030_261_248 / 2**30:.1f} GiB / DP 8)"
    assert knobs[-1] == f"algorithm.kl_coef=0 (no reference model: frees {2 * 8_030_261_248 / 2**30:.1f} GiB)"
    _, plan = _plan(dict(fixed, parallel=dict(tensor=2, rollout_tensor=2),
                         rollout=dict(fixed["rollout"], gpu_memory_utilization=0.4)), LLAMA3_8B, 8)
    assert plan.fits, plan.problems
    # a sample longer than the micro-batch budget is refused by the packer: the plan says so
    _, plan = _plan(dict(fixed, trainer=dict(micro_batch_tokens=2048)), QWEN25_7B, 8)
    assert any("raise it to >= 4096" in p for p in plan.problems)


# ---------------------------------------------------------------------------- the command
def _cmd(*argv):
    from r1mega.plan.cli import add_parser

    parser = argparse.ArgumentParser(prog="r1mega")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plan", *argv])
    return args.fn(args)


V3 = ("examples/deepseek_v3_moe.yaml",)
V3_HF = ("--hf-config", "examples/configs/deepseek_v3.json")


def test_plan_deepseek_v3_recipe(capsys, monkeypatch):
    from tests.dist import REPO

    monkeypatch.chdir(REPO)
    assert _cmd(*V3, "--nodes", "32", "--gpu-mem-gb", "139.8", *V3_HF) == 0
    out = capsys.readouterr().out
    for text in ("parallel layout", "TP 8 x PP 1 x CP 1 x DP 32", "EP 256 x expert-TP 1, expert-DP 1",
                 "8 vLLM engine(s) x TP 32", "671.03B params (37.55B active per token)", "verdict: FITS",
                 "Korthikanti"):
        assert text in out, text
    # the same layout on 80 GB H100s does not fit, and the verdict names a knob
    assert _cmd(*V3, "--nodes", "32", "--gpu-mem-gb", "79.2", "--json", *V3_HF) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] is False and plan["problems"] and plan["layout"]["expert"] == 256
    assert plan["peak_gib"] > 79.2 and plan["model"]["params"] == param_counts(read_hf_config(DEEPSEEK_V3)).total


@pytest.mark.parametrize("override, message", [
    ("parallel.pipeline=2 parallel.expert=64",
     r"num_hidden_layers \(61\) must be a multiple of parallel.pipeline \(2\)"),
    ("parallel.expert=48", r"parallel.expert \(48\) x expert tensor \(1\) must divide world size"),
    ("parallel.tensor=3", r"world size \(256\) must be a multiple of parallel.tensor"),
    ("data.prompts_per_step=100", r"data.prompts_per_step \(100\) must be a multiple of the trainer data-parallel"),
])
def test_impossible_layouts_give_the_layout_error(override, message, monkeypatch):
    from tests.dist import REPO

    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=message):
        _cmd(*V3, *override.split(), "--nodes", "32", *V3_HF)


def test_command_input_errors(tmp_path, monkeypatch):
    from tests.dist import REPO

    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match="pass --hf-config"):
        _cmd(*V3, "--nodes", "32")                                   # /models/DeepSeek-V3-bf16 is not here
    with pytest.raises(ConfigError, match="disagrees"):
        _cmd(*V3, "--nodes", "32", "--world-size", "8", *V3_HF)
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        _cmd(*V3, "--nodes", "32", "--hf-config", str(bad))


@pytest.mark.parametrize("path, cfg", [("examples/configs/deepseek_v3.json", DEEPSEEK_V3),
                                       ("examples/configs/qwen3_30b_a3b.json", QWEN3_30B_A3B)])
def test_example_hf_configs_are_the_published_ones(path, cfg):
    from tests.dist import REPO

    got, want = read_hf_config(os.path.join(REPO, path)), read_hf_config(cfg)
    mla = lambda a: (a.q_lora_rank, a.kv_lora_rank, a.qk_nope_head_dim, a.qk_rope_head_dim, a.v_head_dim)  # noqa: E731
    assert param_counts(got) == param_counts(want) and got.moe_layers == want.moe_layers and mla(got) == mla(want)


# ---------------------------------------------------------------------------- disaggregated (rollout.mode=async)
# Round speeds for the hand computations: F = 1e12 FLOP/s, M = 1e11 B/s (decode is memory bound
# for SMALL), NVLink 1e11 B/s, NIC 1e10 B/s, PCIe 1e10 B/s, every bandwidth reached in full.
HW = dict(tflops=1.0, mfu=1.0, hbm_tbps=0.1, nvlink_gbps=100.0, nic_gbps=10.0, pcie_gbps=10.0, bw_eff=1.0)
SMALL_ASYNC = {"model.dtype": "bfloat16", "model.max_seq_len": 512, "algorithm.group_size": 4,
               "data.prompts_per_step": 8, "data.max_prompt_len": 256, "rollout.max_new_tokens": 256,
               "rollout.gpu_memory_utilization": 0.5, "rollout.sync_bucket_mb": 64, "trainer.micro_batch_tokens": 1024,
               "rollout.mode": "async", "parallel.rollout_ranks": 2, "parallel.rollout_tensor": 1}


def _make(tmp_path, world, gpus_per_node=8, **over):
    from r1mega.plan.cli import make_plan

    hf = tmp_path / "config.json"
    hf.write_text(json.dumps(SMALL))
    opts = {**SMALL_ASYNC, **over}
    return make_plan(None, [f"{k}={v}" for k, v in opts.items() if v is not None], world_size=world,
                     gpus_per_node=gpus_per_node, hf_config=str(hf), gpu_mem_gb=80, reserve_gb=4, hardware=HW)


def test_small_async_plan_by_hand(tmp_path):
    """World 4 = 2 trainer GPUs (TP 1 x DP 2) + 2 rollout GPUs; bf16, Adam, no reference model."""
    GiB, MiB = 1 << 30, 1 << 20
    cfg, plan = _make(tmp_path, 4)
    lay = plan.layout
    assert (plan.world_size, lay.world_size, lay.data, lay.rollout_data, lay.rollout_tensor) == (4, 2, 2, 2, 1)
    # parameters: 4 layers of 589_824 matrix + 512 norm weights, embedding and output layer 1000 x 256, final norm
    n = 4 * (589_824 + 512) + 2 * 256_000 + 256
    assert plan.counts.total == n == 2_873_600
    # trainer GPU: the whole model (TP 1, PP 1), no engine rows
    by = {it.key: it for it in plan.items}
    assert not {"vllm_weights", "vllm_activations", "kv_cache"} & set(by)
    per_tok_layer = 2 * 4 * 256 + 2 * (256 + 2 * 128 + 256 + 3 * 512) + 4 * 8    # TP 1: nothing split
    act = 1024 * (4 * per_tok_layer + 2 * 2 * 256)                              # 1 micro-batch in flight
    head = 4 * 1024 * 1000
    state = n * (2 + 4 + 12 / 2)                                                 # params, grads, Adam / DP 2
    assert plan.totals == pytest.approx({"rollout": state + 4 * GiB, "sync": state + 4 * GiB + 2 * 64 * MiB,
                                         "train": state + 4 * GiB + act + head})
    # rollout GPU: the whole model in bf16, vLLM's activation peak, KV cache = 0.5 x 80 GiB - both
    rg = plan.rollout_gpu
    w = 2 * n
    eng_act = 16384 * 2 * (4 * 256 + 3 * 512) + 1024 * 1000 * 4 * 3
    kv = 0.5 * 80 * GiB - w - eng_act
    rby = {it.key: it.bytes("rollout") for it in rg.items}
    assert rby == pytest.approx({"vllm_weights": w, "vllm_activations": eng_act, "kv_cache": kv,
                                 "sync_buckets": 2 * 64 * MiB, "reserve": 4 * GiB})
    assert rg.total == pytest.approx(0.5 * 80 * GiB + 2 * 64 * MiB + 4 * GiB)
    kv_tok = 2 * 4 * 32 * 4 * 2                                                   # K, V x 4 heads x d 32 x 4 layers
    assert rg.info["kv_tokens"] == pytest.approx(kv / kv_tok)
    assert rg.info["max_util"] == 0.94                                           # floor((80 - 4 - 0.125) / 80, 2)
    assert plan.fits and any("leaves" in m and "idle on each rollout GPU" in m for m in plan.notes)

    # step time: B = 32 samples of L = 512 tokens; N = matmuls a token passes through (no input embedding)
    st = plan.step_time
    N = 4 * 589_824 + 4 * 512 + 256 + 256_000
    attn = lambda c: 2 * 4 * 8 * (32 + 32) * c                                    # noqa: E731  A(c), 4 layers, 8 heads
    train_flops = 32 * 512 * (2 * N + attn(256)) * 3                             # forward + backward, no extra passes
    assert st.train_flops == pytest.approx(train_flops)
    assert st.train == pytest.approx(train_flops / (2 * 1e12))                  # 2 trainer GPUs
    g = st.generate                                                               # 16 sequences per engine, 1 wave
    assert (g.engines, g.per_engine, g.concurrent, g.waves) == (2, 16, 16, 1)
    assert g.prefill == pytest.approx(16 * 256 * (2 * N + attn(128)) / 1e12)
    read = w + 16 * (256 + 128) * kv_tok                                          # weights + KV at mean context
    assert read / 1e11 > 2 * N * 16 / 1e12                                        # memory bound
    assert g.decode == pytest.approx(256 * read / 1e11)
    transfer = 2 * n / 100e9                                                      # one node: NVLink
    assert st.transfer == pytest.approx(transfer)
    assert st.total == pytest.approx(max(g.prefill + g.decode, st.train) + transfer)
    # the colocated layout on the same 4 GPUs: 4 engines of 8 sequences, train on 4, direct sync, sleep/wake
    c = st.colocated
    assert c is not None and c.mode == "colocated" and st.colocated_note == ""
    assert (c.generate.engines, c.generate.per_engine, c.train_gpus) == (4, 8, 4)
    assert c.train == pytest.approx(train_flops / (4 * 1e12))
    c_read = w + 8 * (256 + 128) * kv_tok
    c_gen = 8 * 256 * (2 * N + attn(128)) / 1e12 + 256 * c_read / 1e11
    assert c.generate.seconds == pytest.approx(c_gen)
    assert c.transfer == pytest.approx(w / 1e11)                                  # each GPU copies its shard
    assert c.sleep_wake == pytest.approx(2 * w / 10e9)
    assert c.total == pytest.approx(c_gen + train_flops / 4e12 + w / 1e11 + 2 * w / 10e9)


def test_async_transfer_crosses_nodes_and_report(tmp_path):
    """Two nodes of 2 GPUs: the rollout ranks are on node 1, the broadcast goes over the NIC."""
    from r1mega.plan.report import format_plan, plan_to_dict

    cfg, plan = _make(tmp_path, 4, gpus_per_node=2)
    assert plan.step_time.transfer == pytest.approx(2 * plan.counts.total / 10e9)
    out = format_plan(plan, cfg)
    for text in ("TP 1 x PP 1 x CP 1 x DP 2 on GPUs 0..1", "2 vLLM engine(s) x TP 1 on GPUs 2..3 of their own",
                 "memory per trainer GPU", "memory per rollout GPU", "async, k=1: max(generate, train) + transfer",
                 "colocated sync on the same 4 GPUs:", "over the inter-node NIC", "verdict: FITS"):
        assert text in out, text
    d = json.loads(json.dumps(plan_to_dict(plan, cfg)))
    assert d["world_size"] == 4 and d["step_time"]["mode"] == "async"
    assert d["step_time"]["colocated"]["mode"] == "colocated" and d["rollout_gpu"]["info"]["max_util"] == 0.94


@pytest.mark.parametrize("over, bound", [
    ({}, "train"),
    ({"rollout.max_new_tokens": 4096, "model.max_seq_len": 8192, "trainer.micro_batch_tokens": 8192}, "generate"),
    ({"algorithm.group_size": 64, "algorithm.kl_coef": 0.1}, "train"),
], ids=["small", "long-responses", "big-groups"])
def test_async_k0_is_never_faster_than_k1(tmp_path, over, bound):
    _, k1 = _make(tmp_path, 4, **over)
    _, k0 = _make(tmp_path, 4, **over, **{"rollout.max_staleness": 0})
    _, k2 = _make(tmp_path, 4, **over, **{"rollout.max_staleness": 2})
    a, b = k0.step_time, k1.step_time
    assert (b.generate.seconds > b.train) == (bound == "generate")
    assert b.total == pytest.approx(max(b.generate.seconds, b.train) + b.transfer)
    assert a.total == pytest.approx(a.generate.seconds + a.train + a.transfer)
    assert a.total >= b.total and a.total > max(b.generate.seconds, b.train)
    assert k2.step_time.total == b.total                                          # steady state: k > 1 is k = 1


@pytest.mark.parametrize("world, over, message", [
    (4, {"parallel.rollout_ranks": 0}, r"rollout.mode=async with parallel.rollout_ranks=0: async rollout needs "
                                       r"ranks of its own"),
    (4, {"rollout.mode": "sync"}, r"rollout.mode=sync with parallel.rollout_ranks=2: .*only async uses them"),
    (4, {"parallel.rollout_ranks": 3, "parallel.rollout_tensor": 2}, r"parallel.rollout_ranks \(3\) must be a "
                                                                     r"multiple of parallel.rollout_tensor \(2\)"),
    (4, {"parallel.rollout_ranks": 4}, r"parallel.rollout_ranks=4 needs at least 5 GPUs \(got a world of 4\)"),
    (4, {"parallel.rollout_ranks": 3}, r"data.prompts_per_step \(8\) must be a multiple of the number of rollout "
                                       r"engines \(parallel.rollout_ranks / parallel.rollout_tensor\) \(3\)"),
    (8, {"parallel.rollout_ranks": 6, "parallel.rollout_tensor": 2},
     r"data.prompts_per_step \(8\) must be a multiple of the number of rollout engines \(parallel.rollout_ranks / "
     r"parallel.rollout_tensor\) \(3\)"),
    (8, {}, r"data.prompts_per_step \(8\) must be a multiple of the trainer data-parallel size \(6\)"),
    (8, {"parallel.tensor": 4}, r"trainer ranks \(world 8 - parallel.rollout_ranks 2 = 6\): world size \(6\) must "
                                r"be a multiple of parallel.tensor"),
])
def test_async_refusals(tmp_path, world, over, message):
    with pytest.raises(ConfigError, match=message):
        _make(tmp_path, world, **over)


def test_async_trainer_layout_is_over_world_minus_rollout_ranks(tmp_path):
    """TP 2 over the 6 trainer GPUs of 8: DP 3 (6 prompts), 2 engines. The colocated layout on the 8 GPUs
    would be TP 2 x DP 4, over which 6 prompts do not split: the comparison says why instead of a time."""
    _, plan = _make(tmp_path, 8, **{"parallel.tensor": 2, "data.prompts_per_step": 6})
    assert (plan.layout.world_size, plan.layout.data, plan.layout.rollout_data) == (6, 3, 2)
    assert plan.step_time.colocated is None
    assert plan.step_time.colocated_note == ("not possible: data.prompts_per_step (6) must be a multiple of the "
                                             "trainer data-parallel size (4)")


# SMALL's engine weights on one GPU at rollout TP t (bf16): the 4 layers' matrices (589_824 each) and the
# embedding + output layer (2 x 256_000) split over t, the norm weights (4 x 2 x 256 + 256) on every GPU.
W_TP1 = 2 * (4 * 589_824 + 2 * 256_000 + 4 * 512 + 256)          # 5_747_200: the whole model
W_TP2 = 2 * (4 * 589_824 // 2 + 256_000 + 4 * 512 + 256)          # 2_875_904


def test_async_rollout_tensor_2_by_hand(tmp_path):
    """World 4 = 2 trainer GPUs + 1 engine of TP 2 on GPUs 2..3: each rollout GPU holds half the split
    weights and half the KV heads; the step's 32 samples all go to the one engine."""
    from r1mega.plan.report import format_plan, plan_to_dict

    GiB, MiB = 1 << 30, 1 << 20
    _, tp1 = _make(tmp_path, 4)
    cfg, plan = _make(tmp_path, 4, **{"parallel.rollout_tensor": 2})
    lay = plan.layout
    assert (plan.world_size, lay.world_size, lay.data, lay.rollout_data, lay.rollout_tensor) == (4, 2, 2, 1, 2)
    # per rollout GPU: half of TP 1's weights, plus half the replicated norm weights (whole on both GPUs)
    assert W_TP1 == 5_747_200 and W_TP2 == 2_875_904 == W_TP1 // 2 + (4 * 512 + 256) * 2 // 2
    assert tp1.rollout_gpu.info["engine_weights"] == pytest.approx(W_TP1)
    rg = plan.rollout_gpu
    eng_act = 16384 * 2 * (4 * 256 + 3 * 512 / 2) + 1024 * 1000 * 4 * 3        # MLP width / 2; sampler whole
    kv = 0.5 * 80 * GiB - W_TP2 - eng_act
    rby = {it.key: it.bytes("rollout") for it in rg.items}
    assert rby == pytest.approx({"vllm_weights": W_TP2, "vllm_activations": eng_act, "kv_cache": kv,
                                 "sync_buckets": 2 * 64 * MiB, "reserve": 4 * GiB})
    kv_tok = 2 * 2 * 32 * 4 * 2                                 # K, V x 2 of the 4 KV heads x d 32 x 4 layers
    assert rg.info["kv_bytes_per_token"] == kv_tok == tp1.rollout_gpu.info["kv_bytes_per_token"] / 2
    assert rg.info["kv_tokens"] == pytest.approx(kv / kv_tok)   # per engine: every GPU holds its heads of a token
    assert plan.fits
    # step time: 1 engine of TP 2 gets all B = 32 sequences, at once
    N = 4 * 589_824 + 4 * 512 + 256 + 256_000
    attn = lambda c: 2 * 4 * 8 * (32 + 32) * c                                    # noqa: E731
    g = plan.step_time.generate
    assert (g.engines, g.tensor, g.per_engine, g.concurrent, g.waves) == (1, 2, 32, 32, 1)
    assert g.kv_tokens == pytest.approx(kv / kv_tok)
    assert g.prefill == pytest.approx(32 * 256 * (2 * N + attn(128)) / (2 * 1e12))
    read = W_TP2 + 32 * (256 + 128) * kv_tok                                      # one GPU's weights + KV
    assert read / 1e11 > 2 * N * 32 / (2 * 1e12)                                  # memory bound
    assert g.decode == pytest.approx(256 * read / 1e11)
    assert plan.step_time.transfer == pytest.approx(2 * plan.counts.total / 100e9)  # every rank gets the whole model
    c = plan.step_time.colocated                                 # the same 4 GPUs colocated: 2 engines of TP 2
    assert (c.generate.engines, c.generate.tensor, c.generate.per_engine) == (2, 2, 16)
    out = format_plan(plan, cfg)
    for text in ("1 vLLM engine(s) x TP 2 on GPUs 2..3 of their own", "vLLM weights (TP 2, bfloat16)",
                 "2 GPU(s), one TP-2 shard of an engine each (1 engine(s)), no trainer state",
                 "1 engine(s) x TP 2, 32 sequences each"):
        assert text in out, text
    d = json.loads(json.dumps(plan_to_dict(plan, cfg)))
    assert (d["layout"]["rollout_data"], d["step_time"]["engines"], d["step_time"]["engine_tensor"]) == (1, 1, 2)


def test_async_two_engines_of_tp_2(tmp_path):
    """World 6 = 2 trainer GPUs + 4 rollout GPUs = 2 engines of TP 2 (GPUs 2..3 and 4..5), 16 sequences each;
    per rollout GPU the same shard as one engine of TP 2. On nodes of 3 GPUs the first engine spans two."""
    from r1mega.plan.report import format_plan

    cfg, plan = _make(tmp_path, 6, **{"parallel.rollout_ranks": 4, "parallel.rollout_tensor": 2})
    assert (plan.world_size, plan.layout.world_size, plan.layout.rollout_data) == (6, 2, 2)
    rg = plan.rollout_gpu
    assert rg.info["engine_weights"] == pytest.approx(W_TP2)
    N = 4 * 589_824 + 4 * 512 + 256 + 256_000
    attn = lambda c: 2 * 4 * 8 * (32 + 32) * c                                    # noqa: E731
    g = plan.step_time.generate
    assert (g.engines, g.tensor, g.per_engine, g.concurrent, g.waves) == (2, 2, 16, 16, 1)
    assert g.prefill == pytest.approx(16 * 256 * (2 * N + attn(128)) / (2 * 1e12))
    assert g.decode == pytest.approx(256 * (W_TP2 + 16 * (256 + 128) * 1024) / 1e11)
    out = format_plan(plan, cfg)
    assert "2 vLLM engine(s) x TP 2 on GPUs 2..5 of their own" in out
    assert "4 GPU(s), one TP-2 shard of an engine each (2 engine(s))" in out
    cfg, plan = _make(tmp_path, 6, gpus_per_node=3, **{"parallel.rollout_ranks": 4, "parallel.rollout_tensor": 2})
    assert "2 vLLM engine(s) x TP 2 (1 of them span nodes) on GPUs 2..5" in format_plan(plan, cfg)


def test_validate_layout_refuses_rollout_ranks_not_a_multiple_of_rollout_tensor(tmp_path):
    """The plan's own check (Config.validate refuses it too, before): R = 3 rollout ranks do not split into
    engines of TP 2."""
    import dataclasses

    from r1mega.plan.cli import validate_layout

    cfg, plan = _make(tmp_path, 6, **{"parallel.rollout_ranks": 4, "parallel.rollout_tensor": 2})
    bad = dataclasses.replace(cfg, parallel=dataclasses.replace(cfg.parallel, rollout_ranks=3))
    with pytest.raises(ConfigError, match=r"parallel.rollout_ranks \(3\) must be a multiple of "
                                          r"parallel.rollout_tensor \(2\)"):
        validate_layout(bad, plan.spec, 6)


@pytest.mark.parametrize("ranks, tensor, knob", [
    (2, 1, "parallel.rollout_tensor=2 (engine weights"),
    (2, 2, "parallel.rollout_tensor=4 and parallel.rollout_ranks=4 (a multiple of it) (engine weights"),
    (8, 8, None),                                                 # TP 16 does not split SMALL's 8 heads
])
def test_rollout_gpu_too_small_suggests_a_larger_rollout_tensor(ranks, tensor, knob):
    """A 16 MiB GPU: SMALL's engine shard needs more than the 0.87 it leaves (2 MiB buckets, no reserve): at TP 8
    vLLM's activation peak alone is 8192 x 2 x (4 x 256 + 3 x 512 / 8) + 256 x 1000 x 12 bytes = 21.9 MiB."""
    from r1mega.config import load_config
    from r1mega.plan.rollout_gpu import plan_rollout_gpu

    opts = {**SMALL_ASYNC, "rollout.sync_bucket_mb": 1, "parallel.rollout_ranks": ranks,
            "parallel.rollout_tensor": tensor}
    cfg = load_config(None, [f"{k}={v}" for k, v in opts.items()])
    spec = read_hf_config(SMALL)
    rg = plan_rollout_gpu(cfg, spec, param_counts(spec), gpu_bytes=16 * (1 << 20), reserve_bytes=0)
    assert rg.info["max_util"] == 0.87                              # floor((16 - 2) / 16, 2)
    (msg,) = rg.problems
    assert msg.startswith(f"the engine (TP {tensor}: ") and "rollout_tensor=1" not in msg
    assert msg.endswith("a GPU with more memory, or a smaller model")
    assert (knob in msg) if knob else ("parallel.rollout_tensor=" not in msg)


def test_colocated_sync_paths():
    """Direct (trainer TP == rollout TP, PP 1): each GPU copies its shard at HBM speed; gather: the
    whole model over NVLink, or over the NIC once TP x PP spans nodes; sleep/wake over PCIe both ways."""
    from r1mega.plan.steptime import Hardware, sync_seconds

    hw = Hardware(**HW)
    base = dict(model=dict(dtype="bfloat16", max_seq_len=512), algorithm=dict(group_size=4),
                data=dict(prompts_per_step=8), trainer=dict(micro_batch_tokens=1024))
    cfg, plan = _plan(dict(base, parallel=dict(tensor=2, rollout_tensor=2)), SMALL, 8)
    n, shard = plan.counts.total, plan.info["engine_weights"]
    assert sync_seconds(cfg, plan.spec, plan.counts, plan.layout, gpus_per_node=8, hw=hw)[:2] == \
        pytest.approx((shard / 1e11, 2 * shard / 10e9))
    cfg, plan = _plan(dict(base, parallel=dict(tensor=2, pipeline=2, rollout_tensor=2)), SMALL, 8)
    assert sync_seconds(cfg, plan.spec, plan.counts, plan.layout, gpus_per_node=8, hw=hw)[0] == \
        pytest.approx(2 * n / 100e9)
    assert sync_seconds(cfg, plan.spec, plan.counts, plan.layout, gpus_per_node=2, hw=hw)[0] == \
        pytest.approx(2 * n / 10e9)
