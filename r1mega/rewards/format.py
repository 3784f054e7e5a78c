"""Format reward (DeepSeek-R1): reasoning inside ``<think>...</think>``, then the answer."""

from __future__ import annotations

import re

from r1mega.rewards.result import RewardResult

_ANSWER_TAGS = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.DOTALL)


def _with_think(response: str, meta: dict, cfg) -> str:
    """The response with the opening tag restored when the prompt template already ended in it."""
    prefilled = meta.get("think_prefilled", cfg.think_prefilled)
    return "<think>" + response if prefilled and not response.lstrip().startswith("<think>") else response


def strict_format(text: str, answer_tags: bool = False) -> tuple[bool, str]:
    """Exactly ``<think> reasoning </think> answer``: the response starts with the one ``<think>``,
    has one ``</think>``, non-empty reasoning and a non-empty answer after it (wrapped in one
    ``<answer>...</answer>`` when ``answer_tags``). Returns (ok, reason)."""
    if text.count("<think>") != 1 or text.count("</think>") != 1:
        return False, "needs exactly one <think> and one </think>"
    if not text.lstrip().startswith("<think>"):
        return False, "text before <think>"
    think, after = text.lstrip()[len("<think>"):].split("</think>")
    if not think.strip():
        return False, "empty reasoning"
    if not after.strip():
        return False, "no answer after </think>"
    if answer_tags:
        m = _ANSWER_TAGS.fullmatch(after)
        if not m or not m.group(1).strip() or after.count("<answer>") != 1:
            return False, "answer must be one non-empty <answer>...</answer> block"
    return True, "ok"


def lenient_format(text: str, answer_tags: bool = False) -> tuple[bool, str]:
    """A non-empty reasoning block closed by ``</think>`` (the opening tag may be missing or preceded
    by text) and a non-empty answer after the last ``</think>`` (containing an ``<answer>`` block
    when ``answer_tags``). Returns (ok, reason)."""
    i = text.rfind("</think>")
    if i < 0:
        return False, "no </think>"
    before, after = text[:i], text[i + len("</think>"):]
    think = before[before.rfind("<think>") + len("<think>"):] if "<think>" in before else before
    if not think.strip():
        return False, "empty reasoning"
    if not after.strip():
        return False, "no answer after </think>"
    if answer_tags and not re.search(r"<answer>\s*\S.*?</answer>", after, re.DOTALL):
        return False, "no <answer>...</answer> block"
    return True, "ok"


def format_reward(response: str, answer: str | None, meta: dict, cfg) -> RewardResult:
    """1.0 when the response has the R1 format (``cfg.format_mode``: strict or lenient), else 0.0."""
    check = strict_format if cfg.format_mode == "strict" else lenient_format
    ok, reason = check(_with_think(response, meta, cfg), cfg.answer_tags)
    return RewardResult(1.0 if ok else 0.0, {"reason": reason})
