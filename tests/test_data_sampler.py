"""PromptSampler: resume equals uninterrupted, DP ranks partition the global batch, seeds, epochs."""

import pytest

from r1mega.data.sampler import PromptSampler


def _run(sampler, steps):
    return [sampler.next_batch() for _ in range(steps)]


def test_resume_gives_identical_batches():
    full = _run(PromptSampler(23, 4, seed=7), 20)  # crosses several epochs (5 steps each)
    for cut in (0, 3, 5, 11):
        first = PromptSampler(23, 4, seed=7)
        head = _run(first, cut)
        state = dict(first.state_dict())
        resumed = PromptSampler(23, 4, seed=7)
        resumed.load_state_dict(state)
        assert head + _run(resumed, 20 - cut) == full


def test_dp_ranks_partition_global_batch():
    ref = PromptSampler(30, 6, seed=1)
    ranks = [PromptSampler(30, 6, dp_rank=r, dp_size=3, seed=1) for r in range(3)]
    for _ in range(12):
        glob = ref.next_batch()
        parts = [s.next_batch() for s in ranks]
        assert [len(p) for p in parts] == [2, 2, 2]
        assert sum(parts, []) == glob and len(set(glob)) == 6


def test_resume_with_a_different_dp_size():
    two = [PromptSampler(16, 4, dp_rank=r, dp_size=2, seed=3) for r in range(2)]
    for _ in range(3):
        for s in two:
            s.next_batch()
    four = [PromptSampler(16, 4, dp_rank=r, dp_size=4, seed=3) for r in range(4)]
    for s in four:
        s.load_state_dict(two[0].state_dict())
    ref = PromptSampler(16, 4, seed=3)
    _run(ref, 3)
    assert sum((s.next_batch() for s in four), []) == ref.next_batch()


def test_seeds_and_epochs_reshuffle():
    a = _run(PromptSampler(50, 10, seed=0), 10)
    b = _run(PromptSampler(50, 10, seed=1), 10)
    assert a != b
    epoch0, epoch1 = sum(a[:5], []), sum(a[5:], [])
    assert sorted(epoch0) == sorted(epoch1) == list(range(50))  # each epoch covers the data once
    assert epoch0 != epoch1
    assert sum(_run(PromptSampler(12, 4, shuffle=False), 3), []) == list(range(12))


def test_epoch_drops_remainder():
    s = PromptSampler(10, 4, seed=0)
    _run(s, 2)
    assert s.state_dict()["epoch"] == 0 and s.steps_per_epoch == 2
    s.next_batch()
    assert (s.epoch, s.position) == (1, 4)


def test_errors_name_both_numbers():
    with pytest.raises(ValueError, match=r"prompts_per_step \(8\) is larger than the dataset \(5 prompts\)"):
        PromptSampler(5, 8)
    with pytest.raises(ValueError, match=r"prompts_per_step \(6\) must be a multiple of the data-parallel size \(4\)"):
        PromptSampler(10, 6, dp_size=4)
    s = PromptSampler(10, 2, seed=1)
    with pytest.raises(ValueError, match="seed=2"):
        s.load_state_dict(dict(PromptSampler(10, 2, seed=2).state_dict()))
