"""Synthetic preference pairs whose preferred response follows a simple, checkable rule.

Rows are ``{"prompt", "chosen", "rejected", "rule"}`` (the defaults of :func:`r1mega.reward_model.
data.load_pairs` and ``r1mega train-rm``). Rules (``RULES``):

    polite  The request is arbitrary; both responses are the same few filler words, except that
            the chosen one contains the marker word (default ``please``) at a random position where
            the rejected one has another filler word. A minimal pair: a reward model must find one
            word anywhere in the response. A 2-layer random Qwen2 learns it in tens of steps.
    sum     "What is 3 plus 5?": chosen "3 plus 5 equals 8", rejected the same with a wrong sum
            (off by 1..3, or a random other value). Needs arithmetic: harder for a tiny model.

:func:`rule_holds` is the ground truth (the lead's R1-chain example measures with it whether RL
against the learned reward model raises the true preference rate); :func:`general_prompts`
gives RL prompt rows of kind ``general`` for the same rule. Everything is deterministic in
``seed``; :func:`make_preference_splits` keeps held-out prompts out of the training split.
"""

from __future__ import annotations

import random
import re

from r1mega.data.prompts import DataError
from r1mega.data.synthetic import write_jsonl

__all__ = ["RULES", "preference_row", "make_preference_splits", "rule_holds", "general_prompts", "write_jsonl"]

RULES = ("polite", "sum")
FILLER = ("the", "answer", "is", "one", "two", "three", "four", "five", "step", "first", "then", "so",
          "final", "world", "question", "reason", "that", "it", "and", "for")
TOPICS = ("the sea", "a box", "the world", "one step", "a question", "the answer", "two plus two", "a reason",
          "the first step", "five things", "the final box", "that question")
REQUESTS = ("Tell me about {t}.", "Explain {t}.", "Write about {t}.", "What is {t}?", "Say something on {t}.")


def _polite(rng: random.Random, *, marker: str = "please", min_words: int = 3, max_words: int = 8) -> dict:
    if marker in FILLER:
        raise ValueError(f"marker ({marker!r}) must not be one of the filler words")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"min_words ({min_words}) must be in [1, max_words ({max_words})]")
    prompt = rng.choice(REQUESTS).format(t=rng.choice(TOPICS))
    words = [rng.choice(FILLER) for _ in range(rng.randint(min_words, max_words))]
    at = rng.randrange(len(words))
    chosen = words[:at] + [marker] + words[at + 1:]
    return {"prompt": prompt, "chosen": " " + " ".join(chosen), "rejected": " " + " ".join(words), "rule": "polite"}


def _sum(rng: random.Random, *, max_operand: int = 9) -> dict:
    if max_operand < 1:
        raise ValueError(f"max_operand ({max_operand}) must be >= 1")
    a, b = rng.randint(0, max_operand), rng.randint(0, max_operand)
    right = a + b
    if rng.random() < 0.5:
        wrong = right + rng.choice([-3, -2, -1, 1, 2, 3])
    else:
        wrong = rng.randint(0, 2 * max_operand)
    if wrong == right or wrong < 0:
        wrong = right + 1
    return {"prompt": f"What is {a} plus {b}?", "chosen": f" {a} plus {b} equals {right}",
            "rejected": f" {a} plus {b} equals {wrong}", "rule": "sum"}


def preference_row(rng: random.Random, rule: str = "polite", **knobs) -> dict:
    """One preference row for ``rule`` drawn from ``rng`` (knobs: polite ``marker``, ``min_words``,
    ``max_words``; sum ``max_operand``)."""
    if rule == "polite":
        return _polite(rng, **knobs)
    if rule == "sum":
        return _sum(rng, **knobs)
    raise ValueError(f"unknown preference rule {rule!r}; valid: {', '.join(RULES)}")


def make_preference_splits(n_train: int, n_eval: int, *, rule: str = "polite", seed: int = 0,
                           **knobs) -> tuple[list[dict], list[dict]]:
    """(train, eval) rows, deterministic in ``seed``, all distinct (prompt, chosen, rejected) triples,
    so no held-out row is in the training split. The held-out rows are drawn first. (With ``sum``
    a held-out prompt may appear in training with another wrong answer: with ``max_operand=9``
    there are only 100 prompts.)"""
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"n_train ({n_train}) and n_eval ({n_eval}) must be >= 0")
    rng = random.Random(f"r1mega-preferences:{rule}:{seed}")
    seen: set = set()
    rows: list[dict] = []
    attempts = 0
    while len(rows) < n_train + n_eval:
        attempts += 1
        if attempts > 50 * (n_train + n_eval) + 1000:
            raise DataError(f"preference rule {rule!r}: only {len(rows)} distinct rows for n_train ({n_train}) + "
                            f"n_eval ({n_eval}); widen the knobs ({knobs}) or ask for fewer")
        row = preference_row(rng, rule, **knobs)
        key = (row["prompt"], row["chosen"], row["rejected"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows[n_eval:], rows[:n_eval]


_SUM_PROMPT = re.compile(r"What is (\d+) plus (\d+)\?")


def rule_holds(rule: str, prompt: str, response: str, *, marker: str = "please") -> bool:
    """Ground truth: does ``response`` to ``prompt`` satisfy ``rule``? (polite: the marker word is
    one of its words; sum: the last number in it is the prompt's sum.)"""
    if rule == "polite":
        return marker in response.split()
    if rule == "sum":
        m = _SUM_PROMPT.search(prompt)
        if m is None:
            raise ValueError(f"rule 'sum': prompt {prompt!r} is not of the form 'What is A plus B?'")
        numbers = re.findall(r"-?\d+", response)
        return bool(numbers) and int(numbers[-1]) == int(m.group(1)) + int(m.group(2))
    raise ValueError(f"unknown preference rule {rule!r}; valid: {', '.join(RULES)}")


def general_prompts(n: int, *, rule: str = "polite", seed: int = 0, **knobs) -> list[dict]:
    """``n`` RL prompt rows ``{"question", "answer": None, "kind": "general", "rule"}`` for ``rule``
    (load them with ``r1mega.data.prompts.load_prompts(..., template="plain")``)."""
    rng = random.Random(f"r1mega-general-prompts:{rule}:{seed}")
    return [{"question": preference_row(rng, rule, **knobs)["prompt"], "answer": None, "kind": "general",
             "rule": rule} for _ in range(n)]
