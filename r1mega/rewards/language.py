"""Language-consistency reward (DeepSeek-R1, sec. 2.3.3): the share of the chain of thought that is
written in the target language, measured by Unicode script.

Units are words for space-separated scripts (a run of letters of one script; single Latin letters
are skipped as they are usually variables) and single characters for Han/kana (one character is
about one word); with ``unit="char"`` every letter counts. LaTeX commands and ``$...$`` math are
removed first. A chain of thought without any letters scores 0.
"""

from __future__ import annotations

import re
import unicodedata

from r1mega.rewards.result import RewardResult

SCRIPT_RANGES = {
    "latin": ((0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x24F), (0x1E00, 0x1EFF)),
    "greek": ((0x370, 0x3FF),),
    "cyrillic": ((0x400, 0x4FF),),
    "hebrew": ((0x590, 0x5FF),),
    "arabic": ((0x600, 0x6FF), (0x750, 0x77F)),
    "devanagari": ((0x900, 0x97F),),
    "thai": ((0xE00, 0xE7F),),
    "hangul": ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF)),
    "hiragana": ((0x3040, 0x309F),),
    "katakana": ((0x30A0, 0x30FF),),
    "han": ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF)),
}
CHAR_SCRIPTS = {"han", "hiragana", "katakana", "thai"}  # written without spaces: count characters

LANGUAGES = {
    **{code: ("latin",) for code in ("en", "fr", "de", "es", "it", "pt", "nl", "vi", "id", "tr", "pl", "sv")},
    "zh": ("han",), "ja": ("han", "hiragana", "katakana"), "ko": ("hangul",), "ru": ("cyrillic",),
    "uk": ("cyrillic",), "ar": ("arabic",), "he": ("hebrew",), "hi": ("devanagari",), "el": ("greek",),
    "th": ("thai",), **{s: (s,) for s in SCRIPT_RANGES},
}


def script_of(ch: str) -> str | None:
    """The script name of a letter, or None for digits, punctuation, symbols and unknown scripts."""
    cp = ord(ch)
    for name, ranges in SCRIPT_RANGES.items():
        if any(lo <= cp <= hi for lo, hi in ranges):
            return name if unicodedata.category(ch).startswith("L") or name in CHAR_SCRIPTS else None
    return None


def chain_of_thought(response: str) -> str:
    """The reasoning: before the last ``</think>`` (after a ``<think>``) if present, else everything."""
    i = response.rfind("</think>")
    cot = response[:i] if i >= 0 else response
    j = cot.find("<think>")
    return cot[j + len("<think>"):] if j >= 0 else cot


def script_units(text: str, unit: str = "word") -> dict[str, int]:
    """Count units (words or characters, see module docstring) per script in ``text``."""
    text = re.sub(r"\$\$.*?\$\$|\$[^$]*\$|\\\(.*?\\\)|\\\[.*?\\\]", " ", text, flags=re.DOTALL)
    text = re.sub(r"\\[a-zA-Z]+", " ", text)
    counts: dict[str, int] = {}
    run_script, run_len = None, 0

    def flush():
        if run_script is not None and (run_script != "latin" or run_len > 1):
            counts[run_script] = counts.get(run_script, 0) + 1

    for ch in text:
        s = script_of(ch)
        if unit == "char" or s in CHAR_SCRIPTS:
            flush()
            run_script, run_len = None, 0
            if s is not None:
                counts[s] = counts.get(s, 0) + 1
            continue
        if s is not None and s == run_script:
            run_len += 1
            continue
        flush()
        run_script, run_len = s, (1 if s is not None else 0)
    flush()
    return counts


def language_share(text: str, language: str, unit: str = "word") -> tuple[float, dict[str, int]]:
    """(share of units in the scripts of ``language``, per-script counts)."""
    scripts = LANGUAGES.get(language)
    if scripts is None:
        raise ValueError(f"unknown language {language!r}; valid: {', '.join(sorted(LANGUAGES))}")
    counts = script_units(text, unit)
    total = sum(counts.values())
    if total == 0:
        return 0.0, counts
    return sum(counts.get(s, 0) for s in scripts) / total, counts


def language_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """Share of the chain of thought in the target language: ``meta["language"]`` if set, else
    ``cfg.language``; units ``cfg.language_unit``. In [0, 1]."""
    language = meta.get("language") or cfg.language
    share, counts = language_share(chain_of_thought(response), language, cfg.language_unit)
    return RewardResult(share, {"language": language, "units": counts})
