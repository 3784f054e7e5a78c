"""Near-duplicate detection by word n-gram shingles and Jaccard similarity (Broder 1997, "On the
resemblance and containment of documents").

A text becomes a set of shingles: its n-grams of tokens, where a token is a run of letters or
digits (lower-cased), one CJK character (Han/kana are written without spaces), or one other
non-space symbol (so ``2+3=5`` and ``2*3=5`` differ). Two texts are near-duplicates when

    J(A, B) = |A ∩ B| / |A ∪ B| >= threshold.

Texts shorter than n tokens are one shingle (all their tokens); two texts without tokens are
identical (J = 1). Exact sets, no MinHash: rejection sampling compares only the few responses of
one prompt with each other.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """The tokens of ``text`` (see the module docstring), lower-cased."""
    return _TOKEN.findall(text.lower())


def shingles(text: str, n: int) -> frozenset[tuple[str, ...]]:
    """The set of token n-grams of ``text``; one shingle when it has fewer than ``n`` tokens."""
    if n < 1:
        raise ValueError(f"shingle size n ({n}) must be >= 1")
    toks = tokens(text)
    if len(toks) < n:
        return frozenset([tuple(toks)]) if toks else frozenset()
    return frozenset(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    """|a ∩ b| / |a ∪ b|; 1.0 for two empty sets."""
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def most_similar(s: frozenset, others: Sequence[frozenset]) -> tuple[int, float] | None:
    """(index, similarity) of the entry of ``others`` most similar to ``s`` (first on ties);
    None when ``others`` is empty."""
    best = None
    for j, o in enumerate(others):
        sim = jaccard(s, o)
        if best is None or sim > best[1]:
            best = (j, sim)
    return best
