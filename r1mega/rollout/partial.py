"""Partial rollout: a step generates at most ``chunk`` new tokens per sample; responses not finished
by then wait in a buffer and continue in the next step, under the new weights.

A step then costs the chunk, not the longest response: the long tail of response lengths is paid
over several steps while short responses train at once. A group (the G samples of one prompt)
trains only when all G are finished, so its advantages compare whole responses. Each response
token keeps the policy version that produced it and the engine's logprob of it
(``Sample.token_versions``, ``Sample.rollout_logprobs``): the loss can weight older tokens by
importance sampling (``algorithm.rollout_is``) or the metrics can report their staleness
(:func:`r1mega.algorithms.offpolicy.offpolicy_metrics`).

    buf = PartialBuffer(group_size=G, max_new_tokens=N)
    buf.add_groups(fresh_samples)                       # this step's new prompts, G samples each
    for key, i, s in buf.unfinished():                  # continue them: continuation_request(s, chunk, N)
        buf.update(key, i, extend(s, piece))            # piece: what the engine generated this step
    groups = buf.pop_complete()                         # train on these
    state = buf.state_dict()                            # checkpointed with the run

Pure Python (no engine, no torch): the engine and the loop call it.
"""

from __future__ import annotations

import dataclasses

from r1mega.types import Sample


def is_finished(s: Sample, max_new_tokens: int) -> bool:
    """The response ended (a stop token or string) or reached the response limit."""
    return s.finish_reason == "stop" or len(s.response_ids) >= max_new_tokens


def continuation_request(s: Sample, chunk: int, max_new_tokens: int) -> tuple[list[int], int]:
    """What the engine is asked to continue ``s`` with: (the prompt and the response so far as one
    token sequence, the new tokens allowed this step: min(chunk, what is left of max_new_tokens))."""
    if chunk < 1:
        raise ValueError(f"chunk ({chunk}) must be >= 1 new token per step")
    left = max_new_tokens - len(s.response_ids)
    if left < 1:
        raise ValueError(f"sample of group {s.group_id} already has {len(s.response_ids)} response tokens "
                         f"(max_new_tokens {max_new_tokens}): it is finished, not to be continued")
    return list(s.prompt_ids) + list(s.response_ids), min(chunk, left)


def token_versions(s: Sample) -> list[int]:
    """The policy version of each response token (all ``s.policy_version`` unless recorded)."""
    return list(s.token_versions) if s.token_versions is not None else [s.policy_version] * len(s.response_ids)


def extend(s: Sample, piece: Sample) -> Sample:
    """``s`` continued by ``piece`` (the engine's output for :func:`continuation_request`): the tokens,
    their engine logprobs and versions appended; the finish reason and version are the piece's. The
    routed experts (R3) are the piece's: its engine routed the whole context again under its weights."""
    if s.rollout_logprobs is None or piece.rollout_logprobs is None:
        raise ValueError("partial rollout needs the engine's logprob of every token (rollout_logprobs)")
    if len(piece.rollout_logprobs) != len(piece.response_ids):
        raise ValueError(f"the piece has {len(piece.response_ids)} tokens but {len(piece.rollout_logprobs)} logprobs")
    return dataclasses.replace(
        s, response_ids=list(s.response_ids) + list(piece.response_ids),
        rollout_logprobs=list(s.rollout_logprobs) + list(piece.rollout_logprobs),
        token_versions=token_versions(s) + [piece.policy_version] * len(piece.response_ids),
        finish_reason=piece.finish_reason, policy_version=piece.policy_version,
        response_text=s.response_text + piece.response_text, metadata={**s.metadata, **piece.metadata},
        routed_experts=piece.routed_experts)



def group_start(group: list[Sample]) -> int:
    """The policy version a group started under: its samples' first tokens' (a sample with none
    yet still has the version it was added with)."""
    return min(token_versions(s)[0] if s.response_ids else s.policy_version for s in group)


@dataclasses.dataclass
class PartialBuffer:
    """The groups in flight: each a key (unique, in the order the groups were added) -> G samples,
    finished or not. Groups leave whole, in key order, once all their samples are finished."""

    group_size: int
    max_new_tokens: int
    groups: dict[int, list[Sample]] = dataclasses.field(default_factory=dict)
    next_key: int = 0

    def __post_init__(self):
        if self.group_size < 1 or self.max_new_tokens < 1:
            raise ValueError(f"group_size ({self.group_size}) and max_new_tokens ({self.max_new_tokens}) must be >= 1")

    def __len__(self) -> int:
        return len(self.groups)

    def add_groups(self, samples: list[Sample]) -> list[int]:
        """Add new groups, prompt-major (``group_size`` consecutive samples per group, one group_id
        each, as the engine returns them). Returns their keys."""
        G = self.group_size
        if len(samples) % G:
            raise ValueError(f"{len(samples)} samples are not whole groups of group_size {G}")
        keys = []
        for i in range(0, len(samples), G):
            group = samples[i:i + G]
            if len({s.group_id for s in group}) != 1:
                raise ValueError(f"samples {i}..{i + G - 1} mix group ids {sorted({s.group_id for s in group})}: "
                                 f"expected {G} samples of one prompt in a row")
            self.groups[self.next_key] = list(group)
            keys.append(self.next_key)
            self.next_key += 1
        return keys

    def unfinished(self) -> list[tuple[int, int, Sample]]:
        """(group key, index in the group, sample) of every sample still generating, oldest group first."""
        return [(k, i, s) for k, group in self.groups.items() for i, s in enumerate(group)
                if not is_finished(s, self.max_new_tokens)]

    def update(self, key: int, index: int, sample: Sample) -> None:
        if key not in self.groups:
            raise KeyError(f"no group {key} in the partial-rollout buffer")
        self.groups[key][index] = sample

    def overdue(self, version: int, max_lag: int | None) -> list[int]:
        """Keys of the unfinished groups started ``max_lag`` or more policy versions before
        ``version`` (:func:`group_start`); none when ``max_lag`` is None."""
        if max_lag is None:
            return []
        return [k for k, group in self.groups.items()
                if version - group_start(group) >= max_lag and not self._complete(group)]

    def complete_keys(self) -> list[int]:
        """Keys of the groups whose G samples are all finished, in key order."""
        return [k for k, group in self.groups.items() if self._complete(group)]

    def _complete(self, group: list[Sample]) -> bool:
        return all(is_finished(s, self.max_new_tokens) for s in group)

    def pop_complete(self, limit: int | None = None) -> list[list[Sample]]:
        """Remove and return the groups whose G samples are all finished, in key order (the oldest
        ``limit`` of them if given; the others stay)."""
        done = self.complete_keys()
        return [self.groups.pop(k) for k in done[:limit]]

    # ---- checkpoints: nothing generated is lost or used twice across a resume
    def state_dict(self) -> dict:
        return {"group_size": self.group_size, "max_new_tokens": self.max_new_tokens, "next_key": self.next_key,
                "groups": [[k, [dataclasses.asdict(s) for s in group]] for k, group in self.groups.items()]}

    @classmethod
    def from_state_dict(cls, state: dict) -> "PartialBuffer":
        groups = {int(k): [Sample(**s) for s in group] for k, group in state["groups"]}
        return cls(group_size=state["group_size"], max_new_tokens=state["max_new_tokens"], groups=groups,
                   next_key=state["next_key"])


def redistribute(states: list[dict], parts: int, *, group_size: int, max_new_tokens: int) -> list[PartialBuffer]:
    """The buffers of a checkpoint (one state per engine) for ``parts`` engines: the same buffers
    when the number of engines is unchanged, else every group, oldest first within each engine,
    dealt over the new engines in contiguous shares (keys renumbered). Refuses states saved with
    another group size or response limit: their groups could not be trained as they are."""
    for i, st in enumerate(states):
        if st["group_size"] != group_size or st["max_new_tokens"] != max_new_tokens:
            raise ValueError(f"the checkpoint's partial-rollout buffer {i} holds groups of group_size "
                             f"{st['group_size']} with max_new_tokens {st['max_new_tokens']}, but this run has "
                             f"algorithm.group_size={group_size}, rollout.max_new_tokens={max_new_tokens}: set them "
                             f"back to resume (or resume with rollout.mode=sync to drop the groups in flight)")
    if len(states) == parts:
        return [PartialBuffer.from_state_dict(st) for st in states]
    groups = [g for st in states for g in PartialBuffer.from_state_dict(st).groups.values()]
    out = []
    for p in range(parts):
        mine = groups[len(groups) * p // parts:len(groups) * (p + 1) // parts]
        out.append(PartialBuffer(group_size=group_size, max_new_tokens=max_new_tokens,
                                 groups=dict(enumerate(mine)), next_key=len(mine)))
    return out
