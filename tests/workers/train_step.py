"""Worker: one RL train step (fused and unfused loss) and one SFT step on fixed samples.

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


def main():
    out, hf, tp, pp, *overrides = sys.argv[1:]
    from r1mega.config import load_config
    from r1mega.models import iter_hf_weights, load_hf, read_hf_config
    from r1mega.parallel.init import init_parallel
    from r1mega.trainer.batch import pack
    from r1mega.trainer.policy import Policy
    from r1mega.trainer.samples import denominator

    result = {}
    for name, extra in (("fused", []), ("unfused", ["algorithm.tis_cap=1.5", "algorithm.loss_agg=seq_mean_token_sum"])):
        cfg = load_config(None, [f"parallel.tensor={tp}", f"parallel.pipeline={pp}", "optimizer.name=sgd", "parallel.distributed_optimizer=false", "optimizer.lr=0.5",
                                 "trainer.micro_batch_tokens=48", "algorithm.clip_high=0.28", *extra, *overrides])
        arch = read_hf_config(hf)
        layout = init_parallel(cfg.parallel, arch, seed=1)
        chunks, arch = load_hf(hf, cfg.model, layout)
        policy = Policy(cfg, layout, arch, chunks)
        ss = samples(arch.vocab_size)
        mbs = pack(ss, cfg.trainer.micro_batch_tokens)
        policy.logprobs(mbs, "old")
        for mb in mbs:  # a second epoch's ratio: perturb old logprobs so clipping happens
            if mb.old_logp is not None:
                mb.old_logp = mb.old_logp + 0.3 * torch.sin(torch.arange(mb.num_scored, dtype=torch.float32))
        stats = policy.train_step(mbs, denominator(ss, cfg.algorithm.loss_agg, 9), 9)
        weights = {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}
        result[name] = {"stats": stats, "weights": weights}
        if name == "fused":
            sft = policy.sft_step(mbs, float(sum(len(s.response_ids) for s in ss)))
            result["sft"] = {"stats": sft, "weights": {k: v.clone() for k, v in iter_hf_weights(policy.modules, arch)}}
    if torch.distributed.get_rank() == 0:
        torch.save(result, os.path.join(out, "result.pt"))


if __name__ == "__main__":
    main()
