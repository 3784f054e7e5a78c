"""MoE policies built on Megatron-Core's MoE layer give the logits of transformers' eval-mode
forward, at EP=1 and in real 2-process gloo
runs at EP=2, TP=2 (+SP, expert TP 2), TP=2 with EP=2 (expert TP 1) and PP=2; the HF export
(gathered one expert tensor at a time) is identical to the original. Families: Qwen3-MoE,
Qwen2-MoE (gated shared expert) and DeepSeek-V3 (MLA, sigmoid group-limited routing with the
aux-loss-free bias, shared expert, a dense first layer).

This file is also the torchrun worker:

    torchrun --nproc-per-node N tests/test_moe_models.py OUT LAYOUTS MODEL_DIR [MODEL_DIR ...]

LAYOUTS is a comma list of ``tp.pp.ep.etp.sp`` (sp 0/1). For each layout and model: logits of
MODEL_DIR/moe_ids.pt -> OUT/<layout>.<name>.logits.pt, an export -> OUT/<layout>.<name>.export/,
and what iter_hf_weights (the weight-sync stream) yields on rank r -> OUT/<layout>.<name>.iter<r>.pt.
"""

import os
import sys

import pytest
import torch

from tests.dist import REPO, torchrun
from tests.hf_models import MOE_FAMILIES, make_hf_model
from tests.numerics import assert_within, logits_bound

SELF = os.path.join(REPO, "tests", "test_moe_models.py")
FAMILIES = list(MOE_FAMILIES)
LAYOUTS = {  # name -> tp.pp.ep.etp.sp
    "ep2": "1.1.2.1.0",        # attention DP 2, experts split 2 ways (alltoall dispatch)
    "tp2": "2.1.1.2.1",        # TP 2 + SP, experts split over expert TP 2
    "tp2ep2": "2.1.2.1.1",     # attention TP 2 + SP, experts EP 2 with expert TP 1 (MoE parallel folding)
    "pp2": "1.2.1.1.0",        # pipeline: stage 1 holds the dense layer (qwen3_moe) and the tied head
}


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("hf_moe"))
    out = {}
    for i, f in enumerate(FAMILIES):
        path, model = make_hf_model(f, root, seed=31 + i)
        ids = torch.randint(0, model.config.vocab_size, (3, 14), generator=torch.Generator().manual_seed(i))
        torch.save(ids, os.path.join(path, "moe_ids.pt"))  # even length: sequence parallel splits it over TP=2
        out[f] = (path, model)
    return out


def _check_logits(model, path, logits_file, what):
    ids = torch.load(os.path.join(path, "moe_ids.pt"))
    assert not model.training
    with torch.no_grad():
        ref = model(ids).logits
    ours = torch.load(logits_file)
    assert ours.shape == ref.shape
    # two fp32 forwards (Megatron at this layout, transformers): tests/numerics.py, ~6e-4 .. 2e-3 here
    assert_within(ours, ref, logits_bound(model, ids.shape[1]), f"{what} logits")


def _check_export(model, export_dir, what):
    exported = type(model).from_pretrained(export_dir).state_dict()
    original = model.state_dict()
    assert set(exported) == set(original), f"{what}: {set(exported) ^ set(original)}"
    for k in original:
        assert torch.equal(exported[k], original[k]), f"{what}: {k} differs after export"


def test_ep1_logits_and_export_in_process(hf_models, tmp_path):
    """World of one, in this process (EP=1): logits, export, and the checkpoint-format names."""
    from r1mega.parallel.init import destroy_parallel

    try:
        _ep1(hf_models, tmp_path)
    finally:
        destroy_parallel()  # leave no process group behind in the test process


def _ep1(hf_models, tmp_path):
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import export_hf, iter_hf_weights, load_hf, read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.models.hf_io import SafetensorsReader
    from r1mega.parallel.init import init_parallel

    for family in FAMILIES:
        path, model = hf_models[family]
        arch = read_hf_config(path)
        layout = init_parallel(ParallelConfig(), arch, seed=1)
        chunks, arch = load_hf(path, ModelConfig(), layout)
        ids = torch.load(os.path.join(path, "moe_ids.pt"))
        torch.save(full_logits_forward(chunks, ids), tmp_path / "l.pt")
        _check_logits(model, path, tmp_path / "l.pt", f"{family} EP=1")
        # the weight-sync stream carries exactly the checkpoint's tensors, by the checkpoint's names
        reader = SafetensorsReader(path)
        streamed = dict(iter_hf_weights(chunks, arch))
        assert set(streamed) == set(reader.files), set(streamed) ^ set(reader.files)
        for k, t in streamed.items():
            assert torch.equal(t, reader.get(k)), k
        export_hf(chunks, arch, tmp_path / family)
        _check_export(model, tmp_path / family, f"{family} EP=1")


def test_deepseek_v3_yarn_rope_in_process(tmp_path):
    """DeepSeek-V3's long-context RoPE (YaRN, mscale / mscale_all_dim) through Megatron's MLA:
    logits equal transformers' past the original context (where YaRN changes them)."""
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import load_hf, read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.parallel.init import destroy_parallel, init_parallel

    yarn = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16, beta_fast=32,
                beta_slow=1, mscale=0.8, mscale_all_dim=0.8)
    path, model = make_hf_model("deepseek_v3", str(tmp_path / "yarn"), seed=3, rope_parameters=yarn,
                                max_position_embeddings=64)
    _, plain = make_hf_model("deepseek_v3", str(tmp_path / "plain"), seed=3, max_position_embeddings=64)
    with torch.no_grad():  # sharper attention (q and k x 2), so that the RoPE variant changes the logits well
        for m in (model, plain):  # beyond the rounding bound below (x 1: 2.3e-3, about the bound; x 2: 3.6e-2)
            for name, p in m.named_parameters():
                if name.endswith(("q_b_proj.weight", "kv_b_proj.weight")):
                    p.mul_(2.0)
    model.save_pretrained(path)
    ids = torch.randint(0, model.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    bound = logits_bound(model, ids.shape[1])  # two fp32 forwards: tests/numerics.py
    with torch.no_grad():
        ref = model(ids).logits
        # YaRN matters at these positions: a forward without it would be further than the bound (by 2x: its
        # own rounding) from transformers' logits
        assert (plain(ids).logits - ref).abs().max() > 2 * bound
    arch = read_hf_config(path)
    assert arch.rope_yarn == dict(factor=4.0, original_max_position_embeddings=16, beta_fast=32.0, beta_slow=1.0,
                                  mscale=0.8, mscale_all_dim=0.8)
    try:
        layout = init_parallel(ParallelConfig(), arch, seed=1)
        chunks, arch = load_hf(path, ModelConfig(), layout)
        ours = full_logits_forward(chunks, ids)
    finally:
        destroy_parallel()
    assert_within(ours, ref, bound, "YaRN MLA logits")


def test_unsupported_moe_options_are_named(hf_models):
    import json

    from r1mega.config import ConfigError
    from r1mega.models.arch import read_hf_config

    qwen = json.load(open(os.path.join(hf_models["qwen3_moe"][0], "config.json")))
    deepseek = json.load(open(os.path.join(hf_models["deepseek_v3"][0], "config.json")))
    cases = [
        (dict(qwen, num_experts_per_tok=9), r"num_experts_per_tok \(9\) must be in \[1, num_experts \(8\)\]"),
        (dict(qwen, num_experts_per_tok=1), r"num_experts_per_tok=1 with norm_topk_prob=true"),
        (dict(qwen, use_sliding_window=True), r"use_sliding_window=true is not supported"),
        (dict(qwen, hidden_act="gelu"), r"hidden_act='gelu' is not supported"),
        (dict(deepseek, topk_method="greedy"), r"topk_method='greedy' is not supported"),
        (dict(deepseek, norm_topk_prob=False), r"norm_topk_prob=false is not supported with sigmoid routing"),
        (dict(deepseek, topk_group=2), r"num_experts_per_tok \(2\) must be 2 x topk_group \(2\)"),
        (dict(deepseek, rope_interleave=False), r"rope_interleave=False is not supported"),
        (dict(deepseek, rope_parameters=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16,
                                             attention_factor=1.2)), r"YaRN attention_factor=1.2 is not supported"),
    ]
    for cfg, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            read_hf_config(cfg)


@pytest.mark.multiproc
def test_two_process_layouts(hf_models, tmp_path):
    from r1mega.models.hf_io import SafetensorsReader

    names = list(LAYOUTS)
    torchrun(SELF, str(tmp_path), ",".join(LAYOUTS[n] for n in names), *[hf_models[f][0] for f in FAMILIES],
             nproc=2, timeout=400)
    for n in names:
        for family in FAMILIES:
            path, model = hf_models[family]
            what = f"{family} at {n} ({LAYOUTS[n]})"
            _check_logits(model, path, tmp_path / f"{LAYOUTS[n]}.{family}.logits.pt", what)
            _check_export(model, tmp_path / f"{LAYOUTS[n]}.{family}.export", what)
            reader = SafetensorsReader(path)
            for rank in (0, 1):  # every rank receives the whole model from the stream
                streamed = torch.load(tmp_path / f"{LAYOUTS[n]}.{family}.iter{rank}.pt")
                assert set(streamed) == set(reader.files), f"{what}: {set(streamed) ^ set(reader.files)}"
                for k, t in streamed.items():
                    assert torch.equal(t, reader.get(k)), f"{what}, rank {rank}: streamed {k} differs"


def test_layout_errors_name_the_values(hf_models):
    from r1mega.config import ConfigError
    from r1mega.config.sections import ParallelConfig
    from r1mega.models.arch import read_hf_config
    from r1mega.parallel.layout import check_layout

    arch = read_hf_config(hf_models["qwen2_moe"][0])  # 4 experts
    with pytest.raises(ConfigError, match=r"num_experts \(4\) must be a multiple of parallel.expert \(3\)"):
        check_layout(ParallelConfig(expert=3), 3, arch)
    with pytest.raises(ConfigError, match=r"parallel.tensor \(2\) > 1 needs parallel.sequence_parallel=true"):
        check_layout(ParallelConfig(tensor=2, expert_tensor=1, expert=2), 2, arch)
    with pytest.raises(ConfigError, match=r"parallel.expert \(2\) x expert tensor \(2\) must divide"):
        check_layout(ParallelConfig(tensor=2, expert=2, sequence_parallel=True), 2, arch)
    with pytest.raises(ConfigError, match=r"moe_intermediate_size \(32\) must be a multiple of the expert "
                                          r"tensor-parallel size \(3\)"):
        check_layout(ParallelConfig(expert_tensor=3), 3, arch)


@pytest.mark.multiproc
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU workarounds are off where CUDA exists")
def test_moe_cpu_workarounds_are_needed(hf_models, tmp_path):
    """r1mega.parallel.compat's MoE workarounds 8 and 9: without them the EP=2 alltoall dispatch
    (gloo refuses tensor split sizes) and building DeepSeek-V3's MLA (no TE) fail as documented."""
    import json

    torchrun(SELF, "--without-workarounds", str(tmp_path), hf_models["qwen2_moe"][0], hf_models["deepseek_v3"][0],
             nproc=2, timeout=300)
    errors = json.load(open(tmp_path / "errors.json"))
    assert "all_to_all_single(): incompatible function arguments" in errors["moe_alltoall"], errors
    assert "isinstance() arg 2 must be a type" in errors["mla"], errors


def probe_without_workarounds(out, qwen, deepseek):
    """Worker for the test above: both workarounds off; record the error of each code path."""
    import json

    import torch.distributed as dist

    from r1mega.parallel import compat
    compat.apply(skip=("moe_alltoall", "mla"))
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import load_hf, read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.parallel.init import destroy_parallel, init_parallel

    errors = {}
    for name, path, parallel in (("moe_alltoall", qwen, ParallelConfig(expert=2)), ("mla", deepseek, ParallelConfig())):
        try:
            layout = init_parallel(parallel, read_hf_config(path), seed=1)
            chunks, _ = load_hf(path, ModelConfig(), layout)
            full_logits_forward(chunks, torch.load(os.path.join(path, "moe_ids.pt")))
            errors[name] = "no error"
        except Exception as e:  # noqa: BLE001 - the error text is the result
            errors[name] = f"{type(e).__name__}: {e}"
    if dist.get_rank() == 0:
        json.dump(errors, open(os.path.join(out, "errors.json"), "w"))
    destroy_parallel()


# --------------------------------------------------------------------------- worker
def main():
    if sys.argv[1] == "--without-workarounds":
        return probe_without_workarounds(*sys.argv[2:])
    out, layouts, *models = sys.argv[1:]
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import export_hf, iter_hf_weights, load_hf, read_hf_config
    from r1mega.models.forward import full_logits_forward
    from r1mega.parallel.init import destroy_parallel, init_parallel

    for spec in layouts.split(","):
        tp, pp, ep, etp, sp = (int(x) for x in spec.split("."))
        parallel = ParallelConfig(tensor=tp, pipeline=pp, expert=ep, expert_tensor=etp, sequence_parallel=bool(sp))
        for path in models:
            name = os.path.basename(path.rstrip("/"))
            arch = read_hf_config(path)
            layout = init_parallel(parallel, arch, seed=1)
            chunks, arch = load_hf(path, ModelConfig(), layout)
            logits = full_logits_forward(chunks, torch.load(os.path.join(path, "moe_ids.pt")))
            first = ps.get_tensor_model_parallel_rank() == 0 and ps.get_data_parallel_rank() == 0
            if logits is not None and first:
                torch.save(logits, os.path.join(out, f"{spec}.{name}.logits.pt"))
            streamed = {k: v.clone() for k, v in iter_hf_weights(chunks, arch)}
            torch.save(streamed, os.path.join(out, f"{spec}.{name}.iter{dist.get_rank()}.pt"))
            export_hf(chunks, arch, os.path.join(out, f"{spec}.{name}.export"))
            dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main()
