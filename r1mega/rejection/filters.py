"""Which sampled responses become SFT data: the filters of DeepSeek-R1's rejection sampling
(sec. 2.3.3: keep correct answers; drop chains of thought with mixed languages, long paragraphs
and code blocks), plus near-duplicate removal and a per-prompt cap. Pure Python, no torch.

:func:`select` takes scored :class:`Candidate` records and returns a :class:`Selection`. Each
response is checked in the order of :data:`REASONS` and dropped with the first reason that
applies, so every dropped response has exactly one reason:

    reward_error    the reward scorer raised or timed out on it (its score is not a verdict)
    incorrect       score of ``correctness_reward`` (auto: the row's own) < ``min_score``
    truncated       finish reason 'length' (cut at rollout.max_new_tokens), when ``drop_truncated``
    too_long        more than ``max_response_tokens`` tokens
    code_dominated  share of non-space characters inside ``` fences > ``max_code_fraction``
    mixed_language  share of target-language words in the prose < ``min_language_share``
    long_paragraph  a prose paragraph longer than ``max_paragraph_chars`` characters
    duplicate       n-gram Jaccard >= ``dedup_threshold`` with a response kept for the same prompt
    over_cap        the prompt already has ``max_per_prompt`` kept responses

The first seven look at one response alone. The last two look at the responses of one prompt
that passed them, in sampling order (``prefer_shorter``: fewest tokens first, ties in sampling
order): each is compared with those kept before it, then counted against the cap.

"Prose" is the response without fenced code and without the ``<think>``/``<answer>`` tags; the
language share is :func:`r1mega.rewards.language.language_share` over words (LaTeX math and
commands are removed there). A response with no letters at all has no language to mix and passes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from r1mega.rejection.config import RejectionConfig
from r1mega.rejection.dedup import most_similar, shingles
from r1mega.rewards.language import language_share

REASONS = ("reward_error", "incorrect", "truncated", "too_long", "code_dominated", "mixed_language",
           "long_paragraph", "duplicate", "over_cap")

_FENCE = re.compile(r"```.*?(?:```|\Z)", re.DOTALL)  # an unclosed fence runs to the end
_TAGS = re.compile(r"</?(?:think|answer)>")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")  # a blank line (spaces, \r allowed)


@dataclass(kw_only=True)
class Candidate:
    """One scored response to one prompt."""

    prompt_index: int
    """Row of the prompt in its source (0-based)."""
    sample_index: int
    """Which of the prompt's k samples (0-based, sampling order)."""
    prompt: str
    """The rendered prompt text the engine saw (what SFT trains on as the prompt)."""
    response: str
    response_tokens: int
    finish_reason: str = "stop"
    scores: dict[str, float] = field(default_factory=dict)
    """Each reward's unweighted score (the scorer's breakdown)."""
    reward: float = 0.0
    """Weighted reward (reward.weights)."""
    error: bool = False
    """The scorer raised or timed out on this response."""
    question: str | None = None
    answer: str | None = None
    language: str | None = None
    """Target language of this prompt (None: the selection's default)."""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Dropped:
    candidate: Candidate
    reason: str
    """One of :data:`REASONS`."""
    detail: str
    """The measured value against its threshold, e.g. ``"language share 0.41 < 0.95"``."""


@dataclass
class Selection:
    kept: list[Candidate]
    dropped: list[Dropped]
    stats: dict[str, Any]
    unsolved: list[int]
    """Prompt indices without any kept response."""


def code_fraction(text: str) -> float:
    """Share of the non-space characters of ``text`` that lie inside ``` fences (markers included)."""
    total = len(re.sub(r"\s", "", text))
    if total == 0:
        return 0.0
    code = sum(len(re.sub(r"\s", "", m.group())) for m in _FENCE.finditer(text))
    return code / total


def prose(text: str) -> str:
    """``text`` without fenced code (each block becomes a paragraph break) and think/answer tags."""
    return _TAGS.sub(" ", _FENCE.sub("\n\n", text))


def longest_paragraph(text: str) -> int:
    """Characters of the longest prose paragraph (paragraphs are separated by blank lines)."""
    return max((len(p.strip()) for p in _PARAGRAPH_BREAK.split(prose(text))), default=0)


def target_share(text: str, language: str) -> float | None:
    """Share of target-language words in the prose of ``text``; None when it has no letters."""
    share, counts = language_share(prose(text), language, unit="word")
    return share if counts else None


def first_failure(c: Candidate, cfg: RejectionConfig, language: str) -> tuple[str, str] | None:
    """(reason, detail) of the first per-response filter ``c`` fails, or None when it passes all."""
    if c.error:
        return "reward_error", "the reward scorer failed on this response"
    judge = cfg.judge(c.metadata)
    if judge not in c.scores:
        raise KeyError(f"prompt {c.prompt_index} sample {c.sample_index}: no {judge!r} score "
                       f"(rejection.correctness_reward); scores: {sorted(c.scores)}")
    score = c.scores[judge]
    if score < cfg.min_score:
        return "incorrect", f"{judge} {score:g} < {cfg.min_score:g}"
    if cfg.drop_truncated and c.finish_reason == "length":
        return "truncated", f"finish reason 'length' at {c.response_tokens} tokens"
    if cfg.max_response_tokens is not None and c.response_tokens > cfg.max_response_tokens:
        return "too_long", f"{c.response_tokens} tokens > {cfg.max_response_tokens}"
    frac = code_fraction(c.response)
    if frac > cfg.max_code_fraction:
        return "code_dominated", f"code fraction {frac:.3f} > {cfg.max_code_fraction:g}"
    share = target_share(c.response, c.language or language)
    if share is not None and share < cfg.min_language_share:
        return "mixed_language", f"{c.language or language} share {share:.3f} < {cfg.min_language_share:g}"
    longest = longest_paragraph(c.response)
    if cfg.max_paragraph_chars is not None and longest > cfg.max_paragraph_chars:
        return "long_paragraph", f"paragraph of {longest} chars > {cfg.max_paragraph_chars}"
    return None


def select(candidates: list[Candidate], cfg: RejectionConfig, *, language: str = "en") -> Selection:
    """Split ``candidates`` into kept and dropped (one reason each) and count them.

    ``language``: the target language of candidates whose own ``language`` is None. Kept and
    dropped come back ordered by (prompt_index, sample_index).
    """
    cfg.validate()
    order = sorted(candidates, key=lambda c: (c.prompt_index, c.sample_index))
    seen = set()
    for c in order:
        key = (c.prompt_index, c.sample_index)
        if key in seen:
            raise ValueError(f"two candidates for prompt {key[0]} sample {key[1]}")
        seen.add(key)
    dropped: list[Dropped] = []
    passing: dict[int, list[Candidate]] = {}
    correct = 0
    for c in order:
        failure = first_failure(c, cfg, language)
        correct += failure is None or failure[0] not in ("reward_error", "incorrect")
        if failure is None:
            passing.setdefault(c.prompt_index, []).append(c)
        else:
            dropped.append(Dropped(c, *failure))
    kept: list[Candidate] = []
    for group in passing.values():
        if cfg.prefer_shorter:
            group = sorted(group, key=lambda c: c.response_tokens)  # stable: ties keep sampling order
        mine: list[Candidate] = []
        mine_shingles: list[frozenset] = []
        for c in group:
            s = shingles(c.response, cfg.dedup_ngram) if cfg.dedup_threshold is not None else frozenset()
            match = most_similar(s, mine_shingles) if cfg.dedup_threshold is not None else None
            if match is not None and match[1] >= cfg.dedup_threshold:
                dropped.append(Dropped(c, "duplicate", f"jaccard {match[1]:.3f} >= {cfg.dedup_threshold:g} "
                                                       f"with sample {mine[match[0]].sample_index}"))
            elif cfg.max_per_prompt is not None and len(mine) >= cfg.max_per_prompt:
                dropped.append(Dropped(c, "over_cap", f"prompt already has {cfg.max_per_prompt} kept"))
            else:
                mine.append(c)
                mine_shingles.append(s)
        kept.extend(mine)
    kept.sort(key=lambda c: (c.prompt_index, c.sample_index))
    dropped.sort(key=lambda d: (d.candidate.prompt_index, d.candidate.sample_index))
    prompts = sorted({c.prompt_index for c in order})
    solved = {c.prompt_index for c in kept}
    unsolved = [p for p in prompts if p not in solved]
    return Selection(kept, dropped, selection_stats(len(prompts), len(order), correct, kept, dropped, unsolved),
                     unsolved)


def selection_stats(n_prompts: int, n_responses: int, n_correct: int, kept: list[Candidate],
                    dropped: list[Dropped], unsolved: list[int]) -> dict[str, Any]:
    """The counts written to stats.json (every reason is listed, zero or not)."""
    by_reason = Counter(d.reason for d in dropped)
    return {
        "prompts": n_prompts,
        "responses": n_responses,
        "correct": n_correct,
        "kept": len(kept),
        "dropped": len(dropped),
        "dropped_by_reason": {r: by_reason.get(r, 0) for r in REASONS},
        "prompts_without_kept": len(unsolved),
        "kept_per_prompt": len(kept) / n_prompts if n_prompts else 0.0,
        "mean_kept_tokens": sum(c.response_tokens for c in kept) / len(kept) if kept else 0.0,
        "mean_kept_chars": sum(len(c.response) for c in kept) / len(kept) if kept else 0.0,
    }
