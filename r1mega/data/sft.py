"""SFT datasets: prompt/response pairs or chat ``messages`` -> :class:`~r1mega.types.Sample`.

Two row formats (``sft.format``; ``auto`` picks ``messages`` when the row has ``sft.messages_key``):

* **prompt_response**: ``{"prompt": ..., "response": ...}``. The prompt is used verbatim or under a
  ``data.template`` (``sft.prompt_template``); prompt and response are tokenised separately, as
  the rollout engine sees them (the response continues the prompt's token ids), and EOS is
  appended to the response (``sft.add_eos``).
* **messages**: ``{"messages": [{"role": "system"|"user"|"assistant"|..., "content": ...}, ...]}``.
  Everything before the first assistant turn is the prompt; from there on the response holds
  the remaining turns with ``response_mask`` = 1 on assistant tokens only, so user/tool turns
  of a multi-turn chat carry no loss. With a tokenizer that has a chat template, turns are
  rendered by it (the role header of an assistant turn carries no loss, its end-of-turn token
  does); the token ids of each prefix must be a prefix of the next rendering, which is checked.
  Without one (sentencepiece), a plain format is used: ``"User: {content}\\n"``, and
  ``"Assistant:" + " {content}" + EOS + "\\n"`` for assistant turns (loss on `` {content}`` + EOS).

Examples longer than ``max_len`` are dropped, truncated or an error (``sft.overlong``). Pure
Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from r1mega.data.prompts import DataError, read_located_rows, render_prompt
from r1mega.types import Sample

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class SFTDataStats:
    rows: int = 0
    examples: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    response_tokens: int = 0
    loss_tokens: int = 0
    formats: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def sft_example(prompt_ids: list[int], response_ids: list[int], response_mask: list[int] | None = None) -> Sample:
    """An SFT example: loss on ``response_ids`` (where ``response_mask`` is 1, if given)."""
    return Sample(prompt_ids=list(prompt_ids), response_ids=list(response_ids), group_id=0,
                  response_mask=None if response_mask is None else list(response_mask))


def load_sft_examples(source: str, tokenizer, cfg, *, max_len: int, limit: int | None = None
                      ) -> tuple[list[Sample], SFTDataStats]:
    """Read and tokenise ``source`` under the ``SFTConfig`` ``cfg``; examples and what happened."""
    located = read_located_rows(source, cfg.split)
    if limit is not None:
        located = located[:limit]
    if not located:
        raise DataError(f"SFT dataset {source!r} is empty (0 rows)")
    rows = [row for _, row in located]
    stats = SFTDataStats(rows=len(rows))
    examples = []
    for i, (where, row) in enumerate(located):
        fmt = cfg.format
        if fmt == "auto":
            fmt = "messages" if cfg.messages_key in row else "prompt_response"
        if fmt == "messages":
            prompt, response, mask = _from_messages(row, cfg, tokenizer, where)
        else:
            prompt, response, mask = _from_pair(row, cfg, tokenizer, where)
        stats.formats[fmt] = stats.formats.get(fmt, 0) + 1
        if len(prompt) + len(response) > max_len:
            if cfg.overlong == "error" or (cfg.overlong == "truncate" and len(prompt) >= max_len):
                raise DataError(f"{where}: {len(prompt)} prompt + {len(response)} response tokens exceed the "
                                f"maximum length {max_len} (sft.max_len / model.max_seq_len); raise it or set "
                                f"sft.overlong=drop")
            if cfg.overlong == "drop":
                stats.dropped_overlong += 1
                continue
            keep = max_len - len(prompt)
            response, mask = response[:keep], mask[:keep]
            stats.truncated += 1
        if not any(mask):
            stats.dropped_overlong += 1  # truncation left no loss-carrying token
            continue
        examples.append(sft_example(prompt, response, None if all(mask) else mask))
        stats.examples += 1
        stats.response_tokens += len(response)
        stats.loss_tokens += sum(mask)
    if not examples:
        raise DataError(f"SFT dataset {source!r}: no example left ({stats.dropped_overlong} of {len(rows)} rows "
                        f"longer than {max_len} tokens)")
    return examples, stats


def _text(row: dict, key: str, option: str, where: str) -> str:
    if key not in row:
        raise DataError(f"{where} has no {key!r} field ({option}); its keys: {', '.join(sorted(map(str, row)))}")
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: {key!r} ({option}) is {'null' if value is None else 'a ' + type(value).__name__}, "
                        "expected a string")
    return value


def _start_ids(tokenizer, where: str) -> list[int]:
    if tokenizer.bos_id is None:
        raise DataError(f"{where}: the prompt is empty and the tokenizer has no BOS token to start from")
    return [tokenizer.bos_id]


def _from_pair(row: dict, cfg, tokenizer, where: str) -> tuple[list[int], list[int], list[int]]:
    prompt = _text(row, cfg.prompt_key, "sft.prompt_key", where)
    response = _text(row, cfg.response_key, "sft.response_key", where)
    if cfg.prompt_template != "none":
        prompt = render_prompt(prompt, cfg.prompt_template, tokenizer)
    p_ids = tokenizer.encode(prompt) if prompt else []
    p_ids = p_ids or _start_ids(tokenizer, where)
    r_ids = tokenizer.encode(response) + ([tokenizer.eos_id] if cfg.add_eos else [])
    if not r_ids:
        raise DataError(f"{where}: the response is empty (and sft.add_eos is false)")
    return p_ids, r_ids, [1] * len(r_ids)


def _messages(row: dict, cfg, where: str) -> list[dict]:
    msgs = row.get(cfg.messages_key)
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: {cfg.messages_key!r} (sft.messages_key) must be a non-empty list of "
                        f"{{role, content}} objects")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: message {j + 1} must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise DataError(f"{where}: message {j + 1} has role {m['role']!r}; valid roles: {', '.join(ROLES)}")
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{where}: no assistant message, so nothing to train on")
    last = max(j for j, m in enumerate(msgs) if m["role"] == "assistant")
    return msgs[:last + 1]  # turns after the last assistant reply carry no loss


def _from_messages(row: dict, cfg, tokenizer, where: str) -> tuple[list[int], list[int], list[int]]:
    msgs = _messages(row, cfg, where)
    hf = getattr(tokenizer, "hf", None)
    if hf is not None and getattr(hf, "chat_template", None):
        ids, mask = _render_with_template(hf, tokenizer, msgs, where)
    else:
        ids, mask = _render_plain(tokenizer, msgs, cfg.add_eos)
    first = mask.index(1)  # the prompt ends where the first assistant content starts
    last = len(mask) - mask[::-1].index(1)  # and the response after the last trained token
    ids, mask = ids[:last], mask[:last]
    prompt, response, rmask = ids[:first], ids[first:], mask[first:]
    if not prompt:
        prompt = _start_ids(tokenizer, where)
    return prompt, response, rmask


def _render_plain(tokenizer, msgs: list[dict], add_eos: bool) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    mask: list[int] = []

    def add(part: list[int], m: int) -> None:
        ids.extend(part)
        mask.extend([m] * len(part))

    for m in msgs:
        if m["role"] == "assistant":
            add(tokenizer.encode("Assistant:"), 0)
            add(tokenizer.encode(" " + str(m["content"]).strip()) + ([tokenizer.eos_id] if add_eos else []), 1)
            add(tokenizer.encode("\n"), 0)
        else:
            add(tokenizer.encode(f"{m['role'].capitalize()}: {str(m['content']).strip()}\n"), 0)
    return ids, mask


def _render_with_template(hf, tokenizer, msgs: list[dict], where: str) -> tuple[list[int], list[int]]:
    """Token ids of the chat and a mask of assistant tokens, by rendering growing prefixes."""
    def render(upto: int, generation_prompt: bool) -> list[int]:
        text = hf.apply_chat_template(msgs[:upto], tokenize=False, add_generation_prompt=generation_prompt) if upto else ""
        return tokenizer.encode(text)

    ids: list[int] = []
    mask: list[int] = []
    for j, m in enumerate(msgs):
        if m["role"] == "assistant":
            header = render(j, True)
            _extend(ids, mask, header, 0, where)
        full = render(j + 1, False)
        _extend(ids, mask, full, 1 if m["role"] == "assistant" else 0, where)
    return ids, mask


def _extend(ids: list[int], mask: list[int], rendered: list[int], m: int, where: str) -> None:
    if rendered[:len(ids)] != ids:
        raise DataError(f"{where}: the chat template does not render conversation prefixes as token "
                        f"prefixes, so assistant tokens cannot be located; use prompt/response rows instead")
    new = rendered[len(ids):]
    ids.extend(new)
    mask.extend([m] * len(new))
