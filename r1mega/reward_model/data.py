"""Preference pairs: rows ``{prompt, chosen, rejected}`` -> token ids for reward-model training.

Sources are those of :func:`r1mega.data.prompts.read_rows`: ``.jsonl``, ``.json``, ``.parquet`` or a
``datasets`` name (with ``split``). Field names are configurable; ``prompt_key=None`` reads
datasets whose chosen/rejected texts already hold the whole conversation (HH-RLHF style).

Tokenisation matches what the reward model sees in RL: ``prompt_ids`` and each response are
encoded separately (the policy's response tokens follow the prompt tokens), and EOS is
appended to each response (``append_eos``), as a finished rollout ends with its stop token.
Bad rows raise :class:`~r1mega.data.prompts.DataError` naming the source, row and key; pairs
whose chosen and rejected texts are identical carry no preference and are dropped (counted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from r1mega.data.prompts import DataError, read_located_rows

log = logging.getLogger("r1mega.reward_model")


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: the response ``chosen_ids`` is preferred to ``rejected_ids`` for the prompt."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    index: int = -1
    """Row number in the source (-1 when built in code)."""

    @property
    def chosen(self) -> list[int]:
        """The scored sequence prompt + chosen response."""
        return list(self.prompt_ids) + list(self.chosen_ids)

    @property
    def rejected(self) -> list[int]:
        return list(self.prompt_ids) + list(self.rejected_ids)

    @property
    def max_len(self) -> int:
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def make_pair(prompt_ids, chosen_ids, rejected_ids, index: int = -1) -> PreferencePair:
    return PreferencePair(tuple(int(t) for t in prompt_ids), tuple(int(t) for t in chosen_ids),
                          tuple(int(t) for t in rejected_ids), index)


def _text(row: dict, key: str, where: str, what: str) -> str:
    if key not in row:
        raise DataError(f"{where} has no {key!r} field ({what}); its keys: {', '.join(sorted(map(str, row)))}")
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} must be a string, got {'null' if value is None else type(value).__name__} "
                        f"({str(value)[:60]!r})")
    return value


def load_pairs(source: str, tokenizer, *, split: str = "train", prompt_key: str | None = "prompt",
               chosen_key: str = "chosen", rejected_key: str = "rejected", max_len: int | None = None,
               append_eos: bool = True, limit: int | None = None) -> list[PreferencePair]:
    """Read and tokenise every preference row of ``source``.

    Raises :class:`DataError` for an empty source, a missing or non-string field, an empty
    response, or a prompt + response longer than ``max_len`` tokens (the reward model's
    ``model.max_seq_len``). Rows with identical chosen and rejected texts are skipped.
    """
    located = read_located_rows(source, split)
    if limit is not None:
        located = located[:limit]
    rows = [row for _, row in located]
    if not rows:
        raise DataError(f"preference dataset {source!r} is empty (0 rows)")
    eos = [tokenizer.eos_id] if append_eos else []
    pairs: list[PreferencePair] = []
    ties = 0
    for i, (where, row) in enumerate(located):
        prompt = _text(row, prompt_key, where, "--prompt-key") if prompt_key else ""
        chosen = _text(row, chosen_key, where, "--chosen-key")
        rejected = _text(row, rejected_key, where, "--rejected-key")
        for key, text in ((chosen_key, chosen), (rejected_key, rejected)):
            if not text.strip():
                raise DataError(f"{where}: {key!r} is empty; every pair needs two non-empty responses")
        if chosen == rejected:
            ties += 1
            continue
        pair = make_pair(tokenizer.encode(prompt) if prompt else [], tokenizer.encode(chosen) + eos,
                         tokenizer.encode(rejected) + eos, index=i)
        if not pair.chosen_ids or not pair.rejected_ids:
            raise DataError(f"{where}: a response encodes to no tokens")
        if max_len is not None and pair.max_len > max_len:
            raise DataError(f"{where}: prompt + response is {pair.max_len} tokens, longer than "
                            f"model.max_seq_len ({max_len}); raise it or drop the row")
        pairs.append(pair)
    if ties:
        log.warning("%s: skipped %d of %d rows whose %r equals %r (no preference)", source, ties, len(rows),
                    chosen_key, rejected_key)
    if not pairs:
        raise DataError(f"{source}: no usable preference pairs ({ties} rows had identical responses)")
    return pairs
