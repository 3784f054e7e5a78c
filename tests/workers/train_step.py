"""Worker: one RL train step (fused and unfused loss) and SFT steps on fixed samples.

SFT steps from the initial weights on examples whose responses carry a per-token loss mask:
padded rows, packed rows (block-diagonal attention), and padded rows whose targets at masked
positions were replaced by random ids; plus the float64 Hugging Face loss of the same examples.

    torchrun --nproc-per-node N train_step.py OUT HF_DIR TP PP [key=value ...]

Rank 0 writes OUT/result.pt: old logprobs, losses, grad norms, and the updated weights (HF
names, gathered over TP/PP) after each step.
"""

import os
import sys

import torch


def samples(vocab):
    from r1mega.types import Sample

    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(8):
        P, R = int(torch.randint(2, 7, (1,), generator=g)), int(torch.randint(1, 10, (1,), generator=g))
        ids = torch.randint(0, vocab, (P + R,), generator=g).tolist()
        out.append(Sample(prompt_ids=ids[:P], response_ids=ids[P:], group_id=i // 4,
                          rollout_logprobs=(-torch.rand(R, generator=g) * 3).tolist(),
                          advantage=float(torch.randn(1, generator=g))))
    return out


def sft_examples(vocab):
    from r1mega.trainer.sft import example

    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(7):
        P, R = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(2, 12, (1,), generator=g))
        ids = torch.randint(0, vocab, (P + R,), generator=g).tolist()
        mask = (torch.rand(R, generator=g) > 0.3).long().tolist() if i % 2 else None
        if mask is not None:
            mask[0] = 1
        out.append(example(ids[:P], ids[P:], mask))
    return out


def hf_sft_loss(hf, examples):
    """-sum(mask * log p(response)) / sum(mask) with transformers in float64."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(hf).double().eval()
    nll, n = 0.0, 0.0
    with torch.no_grad():
        for s in examples:
            ids = torch.tensor([s.prompt_ids + s.response_ids])
            logp = torch.log_softmax(model(ids).logits[0], -1)                    # (T, V)
            P, R = len(s.prompt_ids), len(s.response_ids)
            tok = logp[P - 1:P + R - 1].gather(1, torch.tensor(s.response_ids)[:, None])[:, 0]  # (R,)
            m = torch.tensor(s.response_mask if s.response_mask is not None else [1] * R, dtype=torch.float64)
            nll -= float((tok * m).sum())
            n += float(m.sum())
    return nll / n


def sft_steps(hf, tp, pp, overrides):
    """Padded / packed / garbage-target SFT steps, each from the initial weights."""
    from r1mega.config import load_config
    from r1mega.models import iter_hf_weights, load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy

    out = {}
    for name in ("sft_padded", "sft_packed", "sft_garbage"):
        cfg = load_config(None, [f"parallel.tensor={tp}", f"parallel.pipeline={pp}", "optimizer.name=sgd",
                                 "parallel.distributed_optimizer=false", "optimizer.lr=0.5", "trainer.micro_batch_tokens=40",
                                 f"trainer.packing={'packed' if name == 'sft_packed' else 'padded'}", *overrides])
        arch = read_hf_config(hf)
        layout = init_parallel(cfg.parallel, arch, seed=1)
        chunks, arch = load_hf(hf, cfg.model, layout)
        policy = Policy(cfg, layout, arch, chunks)
        ex = sft_examples(arch.vocab_size)
        mbs = policy.pack(ex)
        assert all((mb.segments is not None) == (name == "sft_packed") for mb in mbs)
        if name == "sft_packed":
            assert any(len(mb.sample_ids) > 1 for mb in mbs), "no row holds two samples"
        if name == "sft_garbage":  # targets that carry no loss must not matter
            g = torch.Generator().manual_seed(5)
            for mb in mbs:
                off = mb.mask == 0
                mb.targets[off] = torch.randint(0, arch.vocab_size, (int(off.sum()),), generator=g)
            assert sum(int((mb.mask == 0).sum()) for mb in mbs) > 0
        den = float(sum(len(s.response_ids) if s.response_mask is None else sum(s.response_mask) for s in ex))
        stats = policy.sft_step(mbs, den)
        out[name] = {"stats": stats, "weights": {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}}
    if torch.distributed.get_rank() == 0:
        out["hf_sft_loss"] = hf_sft_loss(hf, sft_examples(read_hf_config(hf).vocab_size))
    return out


def main():
    out, hf, tp, pp, *overrides = sys.argv[1:]
    from r1mega.config import load_config
    from r1mega.models import iter_hf_weights, load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.policy import Policy
    from r1mega.trainer.samples import denominator

    result = {}
    # fused / unfused: a second epoch's step (old logprobs recomputed, then perturbed); recompute and
    # on_policy: one update per batch, old logprobs recomputed vs the trained policy's own (no extra pass)
    for name, extra in (("fused", []), ("unfused", ["algorithm.tis_cap=1.5", "algorithm.loss_agg=seq_mean_token_sum"]),
                        ("recompute", []), ("on_policy", ["trainer.old_logprobs=current"]),
                        # sequence-level MIS by the geometric mean of pi_old / pi_rollout: the random model's
                        # logprobs (~ -5.5) against the samples' rollout ones (-3 .. 0) drop about half the sequences
                        ("rollout_is", ["algorithm.rollout_is=mask", "algorithm.rollout_is_level=geometric",
                                        "algorithm.rollout_is_lower=0.018", "algorithm.rollout_is_upper=1.0"])):
        cfg = load_config(None, [f"parallel.tensor={tp}", f"parallel.pipeline={pp}", "optimizer.name=sgd", "parallel.distributed_optimizer=false", "optimizer.lr=0.5",
                                 "trainer.micro_batch_tokens=48", "algorithm.clip_high=0.28",
                                 "trainer.old_logprobs=recompute", *extra, *overrides])
        arch = read_hf_config(hf)
        layout = init_parallel(cfg.parallel, arch, seed=1)
        chunks, arch = load_hf(hf, cfg.model, layout)
        policy = Policy(cfg, layout, arch, chunks)
        if name == "fused":  # the initial weights (HF names): the tests' bounds scale with each tensor's update
            result["initial"] = {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}
        if name == "fused":  # which global layers each rank built (uneven pipeline splits are checked on it)
            from megatron.core.transformer.transformer_layer import TransformerLayer

            mine = sorted(m.layer_number - 1 for c in chunks for m in c.modules() if isinstance(m, TransformerLayer))
            every = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(every, mine)
            result["rank_layers"] = every
        ss = samples(arch.vocab_size)
        mbs = policy.pack(ss)
        if name != "on_policy":
            policy.logprobs(mbs, "old")
        for mb in mbs if name in ("fused", "unfused") else ():  # a second epoch's ratio: perturb old logprobs so clipping happens
            if mb.old_logp is not None:
                mb.old_logp = mb.old_logp + 0.3 * torch.sin(1.7 * mb.seq_ids + 0.37 * mb.targets)  # layout-independent
        stats = policy.train_step(mbs, denominator(ss, cfg.algorithm.loss_agg, 9), 9)
        weights = {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}
        result[name] = {"stats": stats, "weights": weights}
        if name == "fused":
            sft = policy.sft_step(mbs, float(sum(len(s.response_ids) for s in ss)))
            result["sft"] = {"stats": sft, "weights": {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}}
    result.update(sft_steps(hf, tp, pp, overrides))
    if torch.distributed.get_rank() == 0:
        torch.save(result, os.path.join(out, "result.pt"))


if __name__ == "__main__":
    main()
