"""Worker: training checkpoints with Megatron's distributed optimizer (TP=1, DP=2, gloo).

    torchrun --nproc-per-node 2 ckpt_train.py OUT ROOT MODEL_DIR KILLED_ROOT

1. step 1 -> save -> step 2 (uninterrupted) vs. fresh model + optimizer + scheduler, load,
   step 2: identical weights, LR, RNG draws, extra.
2. a save that raises mid-way leaves the previous checkpoint latest, and it loads exactly;
   the next save cleans the .tmp; keep_last=2 prunes.
3. KILLED_ROOT (a 1-process save SIGKILLed mid-way): its latest checkpoint loads here at
   TP=2 with the HF model's exact weights; the next save removes the dead .tmp directory.
Every check asserts here; rank 0 writes OUT/train.json with what was seen.
"""

import json
import os
import random
import sys


def main():
    import numpy as np
    import torch
    import torch.distributed as dist
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from r1mega.checkpoint import (CheckpointError, find_latest_checkpoint, list_checkpoints, load_checkpoint,
                                   load_model_from_checkpoint, resolve_resume, save_checkpoint, step_dir, training)
    from r1mega.checkpoint.manifest import write_manifest
    from r1mega.config.sections import ModelConfig, ParallelConfig
    from r1mega.models import build, iter_hf_weights, load_hf, read_hf_config
    from r1mega.models.hf_io import SafetensorsReader
    from r1mega.parallel.init import destroy_parallel, init_parallel

    out, root, path, killed_root = sys.argv[1:]
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ["RANK"])
    arch = read_hf_config(path)
    layout = init_parallel(ParallelConfig(tensor=1), arch, seed=5)  # DP=2: the optimizer is sharded
    seen = {}

    def make(from_hf: bool):
        chunks = load_hf(path, ModelConfig(), layout)[0] if from_hf else build(arch, ModelConfig(), layout)
        ddp_cfg = DistributedDataParallelConfig(use_distributed_optimizer=True, grad_reduce_in_fp32=True)
        ddp = [DistributedDataParallel(config=c.config, ddp_config=ddp_cfg, module=c) for c in chunks]
        opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-2, min_lr=1e-3, weight_decay=0.01,
                                                     clip_grad=1.0, use_distributed_optimizer=True), ddp)
        sched = OptimizerParamScheduler(opt, init_lr=0.0, max_lr=1e-2, min_lr=1e-3, lr_warmup_steps=2,
                                        lr_decay_steps=10, lr_decay_style="cosine", start_wd=0.01, end_wd=0.01,
                                        wd_incr_steps=10, wd_incr_style="constant")
        return ddp, opt, sched

    def step(model, n: int):
        ddp, opt, sched = model
        ids = torch.randint(0, arch.vocab_size, (2, 9), generator=torch.Generator().manual_seed(100 * n + rank))
        for m in ddp:
            m.zero_grad_buffer()
        opt.zero_grad()
        loss = ddp[0](ids, torch.arange(9).expand(2, -1), attention_mask=None, labels=ids).float().mean()
        loss.backward()
        for m in ddp:
            m.finish_grad_sync()
        ok, grad_norm, _ = opt.step()
        assert ok and grad_norm > 0
        sched.step(1)

    def weights(model):
        return [p.detach().clone() for m in model[0] for p in m.parameters()]

    def draws():
        return [random.random(), float(np.random.rand()), float(torch.rand(())),
                float(torch.randn(()) if False else torch.rand(2).sum())]

    def same(a, b):
        return all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)

    # ---------------------------------------------------------------- 1. resume == uninterrupted
    A = make(from_hf=True)
    step(A, 1)
    extra = {"policy_version": 1, "sampler": {"epoch": 0, "index": 4 + rank}, "metrics": {"reward_mean": 0.5}}
    p1 = save_checkpoint(root, 1, chunks=A[0], optimizer=A[1], scheduler=A[2], extra=extra, keep_last=2)
    w1 = weights(A)
    rng_ref = draws()
    step(A, 2)
    w2_ref, lr_ref = weights(A), [g["lr"] for g in A[1].param_groups]

    B = make(from_hf=False)
    assert not same(weights(B), w1), "a fresh model should differ from the checkpoint"
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    got = load_checkpoint(p1, chunks=B[0], optimizer=B[1], scheduler=B[2])
    assert got == dict(extra, step=1), got
    assert draws() == rng_ref, "RNG states not restored"
    assert same(weights(B), w1), "weights differ right after loading"
    step(B, 2)
    assert [g["lr"] for g in B[1].param_groups] == lr_ref, "scheduler state not restored"
    diff = max((x - y).abs().max().item() for x, y in zip(weights(B), w2_ref))
    assert same(weights(B), w2_ref), f"step after resume differs from the uninterrupted run by {diff}"
    seen["resume_max_diff"] = diff

    # ---------------------------------------------------------------- 2. failed save, keep_last
    p2 = save_checkpoint(root, 2, chunks=B[0], optimizer=B[1], scheduler=B[2], extra={"policy_version": 2},
                         keep_last=2)
    w_at_2 = weights(B)
    step(B, 3)
    real = training.save_sharded

    def fail_on_optimizer(sd, directory, **kw):
        if directory.endswith("optim"):
            raise RuntimeError("disk full (simulated)")
        return real(sd, directory, **kw)

    training.save_sharded = fail_on_optimizer
    try:
        save_checkpoint(root, 3, chunks=B[0], optimizer=B[1], scheduler=B[2], extra={"policy_version": 3})
        raise AssertionError("the simulated failure did not propagate")
    except RuntimeError as e:
        assert "simulated" in str(e)
    training.save_sharded = real
    dist.barrier()
    assert find_latest_checkpoint(root) == p2, find_latest_checkpoint(root)
    assert os.path.isdir(step_dir(root, 3) + ".tmp")
    C = make(from_hf=False)
    assert load_checkpoint(find_latest_checkpoint(root), chunks=C[0], optimizer=C[1], scheduler=C[2]) == \
        {"policy_version": 2, "step": 2}
    assert same(weights(C), w_at_2), "the previous checkpoint did not load exactly after a failed save"
    save_checkpoint(root, 3, chunks=B[0], optimizer=B[1], scheduler=B[2], keep_last=2)
    assert not os.path.exists(step_dir(root, 3) + ".tmp")
    assert [s for s, _ in list_checkpoints(root)] == [2, 3], list_checkpoints(root)
    save_checkpoint(root, 4, chunks=B[0], keep_last=2)
    seen["after_keep_last"] = sorted(os.listdir(root))

    # ---------------------------------------------------------------- 4. damaged checkpoints
    p3, p4 = step_dir(root, 3), step_dir(root, 4)
    shard = sorted(f for f in os.listdir(os.path.join(p4, "model")) if f.endswith(".distcp"))[0]
    victim = os.path.join(p4, "model", shard)
    with open(victim, "rb") as f:
        original = f.read()
    dist.barrier()
    if rank == 0:  # 4 bytes flipped in the middle of a weight shard
        flipped = bytearray(original)
        mid = len(flipped) // 2
        flipped[mid:mid + 4] = bytes(b ^ 0xFF for b in flipped[mid:mid + 4])
        with open(victim, "wb") as f:
            f.write(flipped)
    dist.barrier()
    assert resolve_resume(root, "auto") == p3, "auto resume did not fall back past the damaged checkpoint"
    try:
        resolve_resume(root, p4)
        raise AssertionError("an explicit resume of a damaged checkpoint was accepted")
    except CheckpointError as e:
        assert f"model/{shard} is damaged" in str(e), e
        seen["damaged_error"] = str(e)
    dist.barrier()
    if rank == 0:
        with open(victim, "wb") as f:
            f.write(original)
    dist.barrier()
    assert resolve_resume(root, "auto") == p4
    if rank == 0:  # rank 1's file gone and the manifest re-hashed to match: the loader itself refuses
        os.remove(os.path.join(p4, "ranks", "rank_00001.pt"))
        write_manifest(p4)
    dist.barrier()
    D = make(from_hf=False)
    try:
        load_checkpoint(p4, chunks=D[0])
        raise AssertionError("a checkpoint without rank 1's file loaded")
    except CheckpointError as e:
        assert "ranks/rank_00001.pt missing" in str(e), e
        seen["rank_file_error"] = str(e)

    # ---------------------------------------------------------------- 3. after a SIGKILLed save
    seen["killed_latest"] = find_latest_checkpoint(killed_root)
    layout2 = init_parallel(ParallelConfig(tensor=2), arch, seed=5)
    chunks, _ = load_model_from_checkpoint(killed_root, ModelConfig(), layout2)
    reader = SafetensorsReader(path)
    for name, t in iter_hf_weights(chunks, arch):
        assert torch.equal(t, reader.get(name)), f"{name} differs after loading past a killed save"
    save_checkpoint(killed_root, 2, chunks=chunks)
    seen["killed_after_resave"] = sorted(os.listdir(killed_root))
    if rank == 0:
        with open(os.path.join(out, "train.json"), "w") as f:
            json.dump(seen, f)
    destroy_parallel()


if __name__ == "__main__":
    main()
