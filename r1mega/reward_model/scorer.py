"""Serving a trained reward model inside RL, and mixing its scores with rule rewards.

DeepSeek-R1's last RL stage (section 2.3.4): reasoning prompts keep rule rewards; general
prompts are scored by a reward model. The RL loop wires it as

    rm = load_reward_model(cfg.reward_model.path, layout)             # once, at setup
    scorer = RewardModelScorer(rm, token_budget=cfg.trainer.micro_batch_tokens)
    general = [s for s in samples if s.kind == "general"]            # samples: the global list
    if general:
        mix_rewards(samples, scorer.score_all([s.prompt_ids + s.response_ids for s in general]), weight)

``score`` is collective over one model-parallel group (every TP/PP rank of it passes the same
sequences; other data-parallel groups may pass other lists or not call at all). ``score_all``
is collective over the whole world: every rank passes the same global list, each data-parallel
group scores its share, and every rank gets all the scores.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist

from r1mega.reward_model.model import RewardModel, run_schedule


class RewardModelScorer:
    """Rewards (fp32, one per sequence) from a :class:`RewardModel`, no grad, eval mode.

    ``normalize``: return ``(r - score_mean) / score_std`` with the statistics of the training
    responses recorded at the end of training (``reward_model.json``), so that typical rewards
    are ~N(0, 1) whatever scale the model's reward drifted to (InstructGPT likewise shifts its RM
    so that reference responses score 0 on average before RL). GRPO's group normalisation makes
    a constant shift irrelevant; the scale matters when RM rewards are mixed with rule rewards.
    """

    def __init__(self, model: RewardModel, *, token_budget: int = 4096, max_len: int | None = None,
                 normalize: bool = False, pad_id: int = 0):
        self.model = model
        self.max_len = max_len or model.meta.max_seq_len
        if token_budget < 1:
            raise ValueError(f"token_budget ({token_budget}) must be >= 1")
        self.token_budget, self.normalize, self.pad_id = token_budget, normalize, pad_id
        if normalize and not model.meta.score_std > 0:
            raise ValueError(f"normalize=True needs a positive score_std in the reward model's metadata "
                             f"(got {model.meta.score_std})")

    def _check(self, seqs: Sequence[Sequence[int]]) -> None:
        if not isinstance(seqs, (list, tuple)):
            raise TypeError(f"score() takes a list of token-id lists, got {type(seqs).__name__}")
        if len(seqs) == 0:
            raise ValueError("score() got an empty list of sequences; call it only with something to score "
                             "(the whole model-parallel group must skip together)")
        V = self.model.arch.vocab_size
        for i, s in enumerate(seqs):
            if len(s) == 0:
                raise ValueError(f"sequence {i} is empty; a reward needs at least one token")
            if len(s) > self.max_len:
                raise ValueError(f"sequence {i} has {len(s)} tokens, longer than the reward model's max_len "
                                 f"({self.max_len}); raise it (load_reward_model(max_seq_len=...)) or cut the "
                                 f"rollouts shorter")
            if len(s) > self.token_budget:
                raise ValueError(f"sequence {i} has {len(s)} tokens, more than the scorer's micro-batch token budget "
                                 f"({self.token_budget}); raise token_budget")
            lo, hi = min(s), max(s)
            if lo < 0 or hi >= V:
                raise ValueError(f"sequence {i} has token id {lo if lo < 0 else hi} outside the reward model's "
                                 f"vocabulary [0, {V}); does it share the policy's tokenizer?")

    @torch.no_grad()
    def score(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N,) fp32 rewards of ``seqs`` (each prompt + response token ids), on every rank of the
        calling model-parallel group."""
        self._check(seqs)
        from megatron.core import parallel_state as ps

        from r1mega.reward_model.batch import sequence_batches

        rm = self.model
        batches = sequence_batches(seqs, self.token_budget, self.pad_id)
        out = torch.zeros(len(seqs), dtype=torch.float32)

        def on_rewards(mb, rewards):
            out[torch.as_tensor(mb.ids, dtype=torch.long)] = rewards[:mb.rows].float().cpu()
            return rewards.new_zeros(())

        was_training = [c.training for c in rm.chunks]
        for c in rm.chunks:
            c.eval()
        try:
            run_schedule(rm.chunks, batches, rm.layout, on_rewards, forward_only=True)
        finally:
            for c, t in zip(rm.chunks, was_training):
                c.train(t)
        pp = ps.get_pipeline_model_parallel_world_size()
        if pp > 1:
            group = ps.get_pipeline_model_parallel_group()
            dist.broadcast(out, src=dist.get_global_rank(group, pp - 1), group=group)
        if self.normalize:
            out = (out - rm.meta.score_mean) / rm.meta.score_std
        return out

    def score_all(self, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """(N,) rewards of the global list ``seqs`` on every rank (collective over the world: every
        rank passes the same list). Data-parallel group d scores the contiguous share d of it."""
        from megatron.core import parallel_state as ps

        n = len(seqs)
        dp, d = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
        bounds = [n * i // dp for i in range(dp + 1)]
        mine = list(seqs[bounds[d]:bounds[d + 1]])
        local = self.score(mine) if mine else torch.zeros(0)
        if dp == 1:
            return local
        size = max(bounds[i + 1] - bounds[i] for i in range(dp))
        buf = torch.zeros(size)
        buf[:local.numel()] = local
        parts = [torch.zeros(size) for _ in range(dp)]
        dist.all_gather(parts, buf, group=ps.get_data_parallel_group())
        return torch.cat([parts[i][:bounds[i + 1] - bounds[i]] for i in range(dp)])


def mix_rewards(samples: list, rm_scores, weight: float = 1.0, kind: str = "general") -> int:
    """Give the samples of ``kind`` their reward-model reward; the others keep their rule rewards.

    ``rm_scores`` holds one score per sample of that kind, in order. Each such sample gets
    ``reward = weight * score`` (replacing any rule reward: general prompts have no reference
    answer) and ``reward_breakdown["reward_model"] = score``. Returns how many were set.
    """
    chosen = [s for s in samples if s.kind == kind]
    scores = rm_scores.tolist() if isinstance(rm_scores, torch.Tensor) else list(rm_scores)
    if len(scores) != len(chosen):
        raise ValueError(f"mix_rewards: {len(scores)} reward-model scores for {len(chosen)} samples of kind "
                         f"{kind!r}; pass one score per such sample, in order")
    for s, r in zip(chosen, scores):
        r = float(r)
        if r != r or r in (float("inf"), float("-inf")):
            raise ValueError(f"mix_rewards: non-finite reward-model score {r} for a sample of group {s.group_id}")
        s.reward_breakdown["reward_model"] = r
        s.reward = weight * r
    return len(chosen)
