"""Final-answer extraction from a model response (math problems).

Strategies, tried in the order given; the first that finds an answer slot wins, and an empty slot
(``\\boxed{}``, an unclosed ``\\boxed{3``, "the final answer is $$") means *no answer*, never an
earlier box or a number from the reasoning:

    boxed        the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces balanced; ``\\boxed 5`` too
    answer_tag   the contents of the last closed ``<answer>...</answer>``, read with the other strategies
                 (a box or phrase inside), or whole when it is a lone short answer
    hashes       GSM8K's ``#### 42`` (the last one)
    answer_is    the last "the (final) answer is X" / "Answer: X" / "**Answer:** X", including MATH's
                 "Final Answer: The final answer is $X$. I hope it is correct."; X is the first ``$..$``
                 after the phrase, else the rest of its line
    statement    a concluding sentence that ends the response with its math: "..., so the value of $k$
                 is $-4$." / "Hence $x = 7$." (the last ``$..$``, right of its last "="). A response cut
                 off mid-sentence has none
    bare         the whole text when it is a lone short answer ("432", "$\\frac{1}{2}$", "x = 3")
    last_number  the last number in the text (integers, decimals, thousands commas, a/b). Not in the
                 default order: on truncated reasoning it returns an intermediate result, which
                 rewards an unfinished answer (Math-Verify's fallback does this)
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

DEFAULT_ORDER = ("boxed", "answer_tag", "hashes", "answer_is", "statement", "bare")

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_HASHES = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(r"(?:final\s+answer|answer)\s*\**\s*(?:is|:|=)\s*:?\s*([^\n]*)", re.IGNORECASE)
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
# one $..$ / $$..$$ / \(..\) / \[..\] span (escaped dollars \$ inside are content)
_MATH = re.compile(r"\$\$((?:\\.|[^$\\])*)\$\$|\$((?:\\.|[^$\\])*)\$|\\\((.*?)\\\)|\\\[(.*?)\\\]", re.DOTALL)
_HOPE = re.compile(r"[.\s]*I hope it is correct\W*$", re.IGNORECASE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_UNIT_TAIL = re.compile(r"(?:\s+[A-Za-z]+){0,3}\s*")
_LIST_GLUE = re.compile(r"\s*(?:,|,?\s*and|,?\s*or)\s*")
_CUE_IS = re.compile(r"(?:\bis|\bare|\bequals|\bbe|\bgives|\bget|\bto)\s*$", re.IGNORECASE)
_CUE = re.compile(r"\b(?:so|thus|therefore|hence|total|altogether|in all|is|are|was|were|has|have|had|equals|"
                  r"gives|makes|gets|needs|costs|earns|left|remain|remains)\b", re.IGNORECASE)
# an answer phrase's value ends at a clause or sentence that explains it: "12, since 3*4=12"
_EXPLAIN = re.compile(r",?\s+(?:since|because|as|which|where|so|from)\b.*$|\.\s+(?=[A-Z]).*$")


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
    """Contents of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces), or ``\\boxed X``.
    "" when the last box is empty or never closed (a truncated answer), None when there is no box."""
    found = list(_BOXED.finditer(text))
    if not found:
        return None
    m = found[-1]
    end = m.end()
    if end < len(text) and text[end] == "{":
        got = read_braced(text, end)
        return got[0].strip() if got is not None else ""
    if "boxed" in m.group(0):
        tail = re.match(r"[^\s$,;{}]+", text[end:])
        if tail:
            return tail.group(0).rstrip(".")
    return ""


def _clean_tail(s: str) -> str:
    s = s.strip()
    s = re.sub(r"^\$+|\$+$", "", s.strip()).strip()
    s = re.sub(r"[.;,!]+$", "", s).strip()
    return re.sub(r"^\$+|\$+$", "", s).strip()


def _math_content(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None).strip()


def extract_hashes(text: str) -> str | None:
    """GSM8K style ``#### 42``: the text after the last ``####`` on its line."""
    found = _HASHES.findall(text)
    return _clean_tail(found[-1]) if found else None


def extract_answer_is(text: str) -> str | None:
    """The last answer phrase (see the module docstring); "" when the phrase has no answer after it."""
    found = list(_ANSWER_IS.finditer(text))
    if not found:
        return None
    ans = found[-1].group(1)
    if not ans.strip():  # "The answer is:" with the answer on the next line; nothing after it: truncated
        ans = text[found[-1].end():].strip().split("\n", 1)[0]
    while True:  # "Final Answer: The final answer is $42$": the inner phrase holds the answer
        inner = _ANSWER_IS.search(ans)
        if inner is None:
            break
        ans = inner.group(1)
    ans = _HOPE.sub("", ans.strip().lstrip("*").strip())
    if ans.startswith(("$", "\\(", "\\[")):
        m = _MATH.match(ans)
        if m:
            return _math_content(m)
    return _clean_tail(_EXPLAIN.sub("", ans))


def extract_statement(text: str) -> str | None:
    """The answer of a concluding sentence that ends ``text`` (see the module docstring)."""
    body = text.rstrip()
    if not body.endswith((".", "!", "$", "\\)", "\\]")):
        return None  # cut off mid-sentence
    body = body.rstrip(".!").rstrip()
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z\\$])|\n", body)[-1]
    spans = list(_MATH.finditer(sentence))
    if spans:
        tail = sentence[spans[-1].end():]
        if not _UNIT_TAIL.fullmatch(tail):  # "... is $24$ square units": unit words may follow
            return None
        group = [spans[-1]]  # "$x = 2$ and $x = 3$": the whole list
        for prev in reversed(spans[:-1]):
            if not _LIST_GLUE.fullmatch(sentence[prev.end():group[0].start()]):
                break
            group.insert(0, prev)
        values = [_math_content(m) for m in group]
        before = sentence[:group[0].start()]
        if len(values) == 1 and "=" not in values[0] and not _CUE_IS.search(before):
            return None
        values = [v.rsplit("=", 1)[1].strip() if "=" in v else v for v in values]
        return ", ".join(v for v in values if v) or None
    numbers = _NUMBER.findall(sentence)  # plain text: "So she has 12 apples left."
    if numbers and _CUE.search(sentence):
        return re.sub(r"\s+", "", numbers[-1])
    return None


def extract_bare(text: str) -> str | None:
    """``text`` itself when it is a lone short answer: one line, at most 48 characters and two words."""
    s = text.strip()
    if not s or "\n" in s or len(s) > 48 or len(_WORD.findall(re.sub(r"\\[A-Za-z]+", " ", s))) > 2:
        return None
    m = _MATH.fullmatch(s.rstrip("."))
    return _math_content(m) if m else _clean_tail(s)


def extract_answer_tag(text: str) -> str | None:
    """The last closed ``<answer>...</answer>``, read with the other default strategies."""
    found = _ANSWER_TAG.findall(text)
    if not found:
        return None
    return extract_answer(found[-1], [m for m in DEFAULT_ORDER if m != "answer_tag"]) or ""


def extract_last_number(text: str) -> str | None:
    """The last number in ``text`` (e.g. "-1,234.5", "3/4", ".5")."""
    found = _NUMBER.findall(text)
    return re.sub(r"\s+", "", found[-1]) if found else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed,
    "answer_tag": extract_answer_tag,
    "hashes": extract_hashes,
    "answer_is": extract_answer_is,
    "statement": extract_statement,
    "bare": extract_bare,
    "last_number": extract_last_number,
}


def after_think(text: str) -> str:
    """The part of a response after its last ``</think>`` (the whole text when there is none)."""
    i = text.rfind("</think>")
    return text if i < 0 else text[i + len("</think>"):]


def extract_answer(text: str, mode: str | Sequence[str] = DEFAULT_ORDER) -> str | None:
    """The final answer in ``text`` using the strategies ``mode`` in order (a name, a comma-separated
    list of names, or a sequence of names; see the module docstring), or None when none matches or
    the first slot found is empty."""
    from r1mega.config.base import choose

    names = [m.strip() for m in mode.split(",")] if isinstance(mode, str) else list(mode)
    for name in names:
        got = choose("answer extraction mode", name, EXTRACTORS)(text)
        if got is not None:
            return got.strip() or None
    return None
