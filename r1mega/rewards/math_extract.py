"""Final-answer extraction from a model response (math problems).

Strategies, tried in the order given (the first that finds something wins):

    boxed        the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces balanced; ``\\boxed 5`` too
    hashes       GSM8K's ``#### 42`` (the last one)
    answer_is    the last "the (final) answer is X" / "Answer: X", up to the end of its line
    last_number  the last number in the text (integers, decimals, thousands commas, a/b)
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

DEFAULT_ORDER = ("boxed", "hashes", "answer_is", "last_number")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*:?\s*([^\n]+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


def read_braced(text: str, start: int) -> tuple[str, int] | None:
    """``text[start]`` must be ``{``: return (contents, index after the matching ``}``) or None.
    Escaped braces ``\\{`` and ``\\}`` do not count."""
    if start >= len(text) or text[start] != "{":
        return None
    depth, i = 0, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None


def extract_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), or ``\\boxed X``."""
    for m in reversed(list(_BOXED.finditer(text))):
        end = m.end()
        if end < len(text) and text[end] == "{":
            got = read_braced(text, end)
            if got is not None and got[0].strip():
                return got[0].strip()
        elif "boxed" in m.group(0):
            tail = re.match(r"[^\s$,;{}]+", text[end:])
            if tail:
                return tail.group(0).rstrip(".")
    return None


def _clean_tail(s: str) -> str:
    s = s.strip()
    s = re.sub(r"^\$+|\$+$", "", s.strip()).strip()
    s = re.sub(r"[.;,!]+$", "", s).strip()
    return re.sub(r"^\$+|\$+$", "", s).strip()


def extract_hashes(text: str) -> str | None:
    """GSM8K style ``#### 42``: the text after the last ``####`` on its line."""
    found = _HASHES.findall(text)
    return _clean_tail(found[-1]) or None if found else None


def extract_answer_is(text: str) -> str | None:
    """The last "the answer is X" / "Answer: X" phrase, X up to the end of its line."""
    found = _ANSWER_IS.findall(text)
    if not found:
        return None
    ans = _clean_tail(found[-1])
    return ans or None


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (e.g. "-1,234.5", "3/4", ".5")."""
    found = _NUMBER.findall(text)
    return re.sub(r"\s+", "", found[-1]) if found else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed,
    "hashes": extract_hashes,
    "answer_is": extract_answer_is,
    "last_number": extract_last_number,
}


def after_think(text: str) -> str:
    """The part of a response after its last ``</think>`` (the whole text when there is none)."""
    i = text.rfind("</think>")
    return text if i < 0 else text[i + len("</think>"):]


def extract_answer(text: str, mode: str | Sequence[str] = DEFAULT_ORDER) -> str | None:
    """The final answer in ``text`` using the strategies ``mode`` in order (a name, a comma-separated
    list of names, or a sequence of names; see the module docstring), or None when none matches."""
    from r1mega.config.base import choose

    names = [m.strip() for m in mode.split(",")] if isinstance(mode, str) else list(mode)
    for name in names:
        got = choose("answer extraction mode", name, EXTRACTORS)(text)
        if got is not None and got.strip():
            return got.strip()
    return None
