"""The channels of async RL (r1mega.rollout.async_rollout.Link) in real processes, without vLLM or
Megatron: weights broadcast bucket by bucket from trainer rank 0 to every rollout rank arrive
bit-exact (odd shapes, bf16 / fp32 / int64, buckets of one and of many tensors, a tensor larger
than a bucket); a trainer rank outside the weight group just consumes its iterator; batches
queue through the store by step and rollout rank, and a checkpoint's finished batches come back
as the same samples."""

import dataclasses
import os
import pickle
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.dist import free_port

pytestmark = [pytest.mark.multiproc]


def _weights(version):
    g = torch.Generator().manual_seed(version)
    return [("embed.weight", torch.randn(37, 5, generator=g)),
            ("layers.0.norm", torch.randn(5, generator=g).to(torch.bfloat16)),
            ("layers.0.big", torch.randn(300, 7, generator=g)),           # 8.4 KB: more than a bucket
            ("layers.0.steps", torch.randint(-9, 9, (3, 3), generator=g)),
            ("head.bias", torch.randn(1, generator=g).double())]


def _sample(step, i, j):
    from r1mega.types import Sample
    return Sample(prompt_ids=[1, step], response_ids=[i, j, 7], group_id=i, rollout_logprobs=[-0.5, -1.0, -0.25],
                  policy_version=step - 1, response_text=f"s{step}r{i}.{j}", metadata={"row": j})


def _worker(rank, world, trainers, port, out):
    from r1mega.rollout.async_rollout import Link, Roles

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from r1mega.rollout.async_rollout import job_store
    roles = Roles(rank=rank, world=world, num_trainers=trainers, num_rollout=world - trainers)
    link = Link(job_store(60), roles, timeout_s=60, bucket_mb=4096 / 2**20)  # 4 KB buckets
    got = {}
    if not roles.is_rollout:
        for version in (1, 2):
            stats = link.send_weights(iter(_weights(version)), version)
            if rank == 0:
                assert stats["sync/buckets"] >= 3 and stats["sync/bytes"] == sum(
                    t.numel() * t.element_size() for _, t in _weights(version))
            else:
                assert stats == {}
        batches = link.get_batch(3)
        got["batch3"] = [(s.response_ids, s.group_id) for s in batches[0]], batches[1]
        link.get_batch(4)                                # wait until batch 4 is finished everywhere
        link.store.set(f"read/{rank}", b"1")             # the loop's collectives give this order: every
        link.store.wait([f"read/{r}" for r in range(trainers)])  # trainer rank reads before rank 0 drops
        if rank == 0:
            saved = link.finished_batches(after=3)       # batch 4 is finished, 5 is not
            got["saved_steps"] = sorted(saved)
            link.drop_batch(3)
            link.drop_batch(4)
            assert not link.has_batch(3) and not link.has_batch(4)
            link.restore_batches(saved)
            again = link.get_batch(4)[0]
            got["restored"] = [dataclasses.asdict(s) for s in again]
            link.publish_start(3, 3, saved)
    else:
        i = roles.rollout_index
        for expected in (1, 2):
            version, tensors = link.receive_weights()
            got[version] = [(n, t.dtype, t.clone()) for n, t in tensors]
            assert version == expected
        for step in (3, 4):
            link.put_batch(step, [_sample(step, i, j) for j in range(2)], {"version": step - 1, "rank": i})
        got["start"] = link.read_start()
        got["batch4"] = [dataclasses.asdict(_sample(4, r, j)) for r in range(world - trainers) for j in range(2)]
    with open(os.path.join(out, f"rank{rank}.pkl"), "wb") as f:
        pickle.dump(got, f)


@pytest.mark.parametrize("world,trainers", [(2, 1), (4, 2)])
def test_weights_and_batches_cross_between_trainer_and_rollout_ranks(tmp_path, world, trainers):
    port = free_port()
    master = dist.TCPStore("127.0.0.1", port, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False)
    mp.start_processes(_worker, args=(world, trainers, port, str(tmp_path)), nprocs=world, start_method="spawn")
    del master
    res = [pickle.load(open(tmp_path / f"rank{r}.pkl", "rb")) for r in range(world)]
    for r in range(trainers, world):
        for version in (1, 2):
            sent = _weights(version)
            assert [n for n, _, _ in res[r][version]] == [n for n, _ in sent]
            for (_, dt, t), (_, ref) in zip(res[r][version], sent):
                assert dt == ref.dtype and torch.equal(t, ref)          # bit-exact, every dtype
    R = world - trainers
    for r in range(trainers):                                            # every trainer rank reads batch 3
        samples, infos = res[r]["batch3"]
        assert samples == [([i, j, 7], i) for i in range(R) for j in range(2)]
        assert infos == [{"version": 2, "rank": i} for i in range(R)]
    assert res[0]["saved_steps"] == ["4"]
    assert res[0]["restored"] == res[trainers]["batch4"]                 # the same samples, field by field
    assert res[trainers]["start"] == {"step": 3, "version": 3, "restored": [4]}


def test_roles_split_the_torchrun_world(monkeypatch):
    from r1mega.config import ConfigError, load_config
    from r1mega.rollout.async_rollout import split_roles

    cfg = load_config(None, ["rollout.mode=async", "parallel.rollout_ranks=2"])
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for rank, rollout in ((0, False), (2, False), (3, True), (4, True)):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "5")
        roles = split_roles(cfg)
        assert (roles.num_trainers, roles.num_rollout, roles.is_rollout) == (3, 2, rollout)
        # a trainer's default group: 3 ranks; a rollout rank's world: the 2 rollout ranks
        assert os.environ["WORLD_SIZE"] == ("2" if rollout else "3")
        assert os.environ["RANK"] == str(rank - 3 if rollout else rank)
        if rollout:
            assert roles.rollout_index == rank - 3 and (roles.engine_index, roles.engine_tp_rank) == (rank - 3, 0)
    tp2 = load_config(None, ["rollout.mode=async", "parallel.rollout_ranks=4", "parallel.rollout_tensor=2"])
    for rank, engine, tp in ((2, 0, 0), (3, 0, 1), (4, 1, 0), (5, 1, 1)):  # world 6: ranks 2..5 generate
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "6")
        roles = split_roles(tp2)
        assert roles.num_engines == 2 and (roles.engine_index, roles.engine_tp_rank) == (engine, tp)
        assert (os.environ["RANK"], os.environ["WORLD_SIZE"]) == (str(rank - 2), "4")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match="parallel.rollout_ranks=2 needs at least 3 torchrun ranks"):
        split_roles(cfg)
