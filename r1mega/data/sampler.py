"""Deterministic per-data-parallel-rank prompt sampling that survives resume.

Every step draws a *global* batch of ``prompts_per_step`` dataset indices; data-parallel rank
``r`` of ``dp_size`` takes the contiguous slice ``[r * P/dp, (r+1) * P/dp)``. The global batch
is a pure function of ``(seed, epoch, position)``:

    order(epoch)  = range(N) shuffled by random.Random("r1mega-sampler:{seed}:{epoch}")  (or identity)
    batch         = order(epoch)[position : position + P]

``position`` advances by P; an epoch ends when fewer than P indices remain (that remainder is
dropped, so every batch is full and holds P distinct prompts; the next epoch reshuffles, so
different prompts are dropped each epoch). The state is just ``(epoch, position)``: resuming from
:meth:`PromptSampler.state_dict` gives exactly the batches an uninterrupted run would see, and
because the global batch does not depend on the layout, a run may resume with a different
``dp_size``.
"""

from __future__ import annotations

import random


class PromptSampler:
    """Yields this rank's dataset indices, one step at a time."""

    def __init__(self, dataset_size: int, prompts_per_step: int, *, dp_rank: int = 0, dp_size: int = 1,
                 seed: int = 0, shuffle: bool = True):
        if dataset_size < 1:
            raise ValueError(f"dataset_size ({dataset_size}) must be >= 1")
        if prompts_per_step < 1:
            raise ValueError(f"data.prompts_per_step ({prompts_per_step}) must be >= 1")
        if prompts_per_step > dataset_size:
            raise ValueError(f"data.prompts_per_step ({prompts_per_step}) is larger than the dataset "
                             f"({dataset_size} prompts)")
        if dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank ({dp_rank}) must be in [0, dp_size ({dp_size}))")
        if prompts_per_step % dp_size:
            raise ValueError(f"data.prompts_per_step ({prompts_per_step}) must be a multiple of the "
                             f"data-parallel size ({dp_size})")
        self.dataset_size, self.prompts_per_step = dataset_size, prompts_per_step
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.position = 0, 0
        self._order_epoch, self._order = -1, []

    @property
    def steps_per_epoch(self) -> int:
        return self.dataset_size // self.prompts_per_step

    @property
    def per_rank(self) -> int:
        return self.prompts_per_step // self.dp_size

    def order(self, epoch: int) -> list[int]:
        """The dataset order of ``epoch`` (cached for the current epoch)."""
        if epoch != self._order_epoch:
            order = list(range(self.dataset_size))
            if self.shuffle:
                random.Random(f"r1mega-sampler:{self.seed}:{epoch}").shuffle(order)
            self._order_epoch, self._order = epoch, order
        return self._order

    def global_batch(self, epoch: int, position: int) -> list[int]:
        """The ``prompts_per_step`` indices of all ranks at ``(epoch, position)``."""
        return self.order(epoch)[position:position + self.prompts_per_step]

    def next_global_batch(self) -> list[int]:
        """Advance one step; return every rank's indices (rank r's share is a contiguous slice)."""
        if self.position + self.prompts_per_step > self.dataset_size:
            self.epoch, self.position = self.epoch + 1, 0
        batch = self.global_batch(self.epoch, self.position)
        self.position += self.prompts_per_step
        return batch

    def next_batch(self) -> list[int]:
        """Advance one step; return this rank's ``prompts_per_step // dp_size`` indices."""
        batch = self.next_global_batch()
        return batch[self.dp_rank * self.per_rank:(self.dp_rank + 1) * self.per_rank]

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "dataset_size": self.dataset_size, "prompts_per_step": self.prompts_per_step,
                "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state``. The dataset size, seed, batch size and shuffle must match the
        saved run (else the batches would silently differ); ``dp_size`` may change."""
        for key in ("dataset_size", "seed", "prompts_per_step", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"sampler state from a run with {key}={state[key]!r}, but this run has "
                                 f"{key}={getattr(self, key)!r}; resuming would change the prompt order")
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.dataset_size:
            raise ValueError(f"invalid sampler state: epoch={epoch}, position={position} "
                             f"(dataset_size {self.dataset_size})")
        self.epoch, self.position = epoch, position
