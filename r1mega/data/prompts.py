"""Prompt datasets: rows from a local file or a `datasets` name -> templated, tokenized records.

Sources: ``.jsonl`` (one object per line), ``.json`` (a list of objects, or ``{"data": [...]}``),
``.parquet`` (pyarrow), a directory written by ``datasets``' ``save_to_disk`` (a ``Dataset``, or a
``DatasetDict`` read at ``data.split``), or any other string as a
``datasets.load_dataset(name, split=...)`` name.
Each row needs the question and answer fields named by ``data.question_key`` /
``data.answer_key``, or those of a benchmark layout (``data.format``: GSM8K, MATH, AIME/AMC, or
detected from the first row; see :mod:`r1mega.data.benchmarks`). GSM8K-style answers
(``"...reasoning... #### 1,234"``) are reduced to the final answer (``"1234"``). The remaining row
fields go into the record's ``metadata`` (reward functions receive it, e.g. countdown's
``numbers`` and ``target``).

Templates (``data.template``):

    r1_zero_compact  the same instructions in one line (for tiny models: the prompt stays short)
    r1_zero  the DeepSeek-R1-Zero template, asking for ``<think> ... </think> <answer> \\boxed{..}
             </answer>``: what r1mega.rewards' format reward (strict or lenient, with or without
             ``reward.answer_tags``) and accuracy reward (boxed extraction after ``</think>``) check.
             It ends with "Assistant:" (``reward.think_prefilled`` stays false).
    chat     the tokenizer's chat template, one user turn: the question plus a boxed-answer instruction.
    plain    the question alone.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

R1_ZERO_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, and the final answer is written inside \\boxed{{}}, i.e., <think> "
    "reasoning process here </think> <answer> \\boxed{{final answer}} </answer>.\n"
    "User: {question}\n"
    "Assistant:"
)
# The same contract in a few tokens, for tiny models whose compute the long template would dominate.
R1_ZERO_COMPACT_TEMPLATE = (
    "Think in <think> </think>, then answer in <answer> \\boxed{{}} </answer>.\n"
    "User: {question}\n"
    "Assistant:"
)
CHAT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# Code prompts (rows with tests, r1mega.rewards.code): the answer is a program in a fenced block.
R1_ZERO_CODE_TEMPLATE = (
    "A conversation between User and Assistant. The user asks a programming question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then provides the user "
    "with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, and the answer is one complete {lang} program in a fenced code block, "
    "i.e., <think> reasoning process here </think> <answer> ```{fence}\nprogram\n``` </answer>.\n"
    "User: {question}\n"
    "Assistant:"
)
R1_ZERO_COMPACT_CODE_TEMPLATE = (
    "Think in <think> </think>, then answer in <answer> ```{fence} program ``` </answer>.\n"
    "User: {question}\n"
    "Assistant:"
)
CHAT_CODE_INSTRUCTION = ("Please reason step by step, and give your final solution as one complete {lang} program "
                         "in a fenced code block (```{fence} ... ```).")
CODE_LANGUAGES = {"python": ("Python 3", "python"), "cpp": ("C++17", "cpp")}
TEMPLATES = ("r1_zero", "r1_zero_compact", "chat", "plain")
FILE_SUFFIXES = (".jsonl", ".json", ".parquet")
KINDS = ("reasoning", "general")


class DataError(ValueError):
    """A dataset row, file or size does not fit the config; the message names file, row and key."""


@dataclass(kw_only=True)
class PromptRecord:
    """One prompt, ready for the rollout engine."""

    index: int
    """Row number in the source (0-based): the sampler's indices point here."""
    prompt_text: str
    prompt_ids: list[int]
    answer: str | None
    """Reference answer for rule rewards (normalised; None for general prompts)."""
    kind: str = "reasoning"
    """Reward family: ``reasoning`` (rule rewards) or ``general`` (reward model)."""
    metadata: dict[str, Any] = field(default_factory=dict)


def normalize_answer(answer: Any) -> str:
    """The final answer as a string: GSM8K's ``#### 1,234`` -> ``1234``; numbers -> str."""
    if isinstance(answer, bool):
        return str(answer)
    if isinstance(answer, (int, float)):
        return str(int(answer)) if float(answer).is_integer() else str(answer)
    text = str(answer)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    text = text.strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    return text


def render_prompt(question: str, template: str, tokenizer=None, *, code_language: str | None = None) -> str:
    """The prompt text for ``question`` under ``template`` (``chat`` needs the tokenizer).

    ``code_language`` (``python`` or ``cpp``) marks a code prompt: the template asks for one
    fenced program instead of a ``\\boxed{}`` answer."""
    if code_language is not None:
        if code_language not in CODE_LANGUAGES:
            raise DataError(f"code language {code_language!r}: expected one of {', '.join(CODE_LANGUAGES)}")
        lang, fence = CODE_LANGUAGES[code_language]
        if template == "r1_zero":
            return R1_ZERO_CODE_TEMPLATE.format(question=question.strip(), lang=lang, fence=fence)
        if template == "r1_zero_compact":
            return R1_ZERO_COMPACT_CODE_TEMPLATE.format(question=question.strip(), fence=fence)
        if template == "chat" and tokenizer is not None:
            text = f"{question.strip()}\n{CHAT_CODE_INSTRUCTION.format(lang=lang, fence=fence)}"
            return tokenizer.apply_chat_template([{"role": "user", "content": text}])
    if template == "r1_zero":
        return R1_ZERO_TEMPLATE.format(question=question.strip())
    if template == "r1_zero_compact":
        return R1_ZERO_COMPACT_TEMPLATE.format(question=question.strip())
    if template == "plain":
        return question
    if template == "chat":
        if tokenizer is None:
            raise ValueError("template 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template([{"role": "user", "content": f"{question.strip()}\n{CHAT_INSTRUCTION}"}])
    raise DataError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")


def is_local_source(source: str) -> bool:
    return os.path.exists(source) or source.endswith(FILE_SUFFIXES)


def read_located_rows(source: str, split: str = "train") -> list[tuple[str, dict]]:
    """Every row of ``source`` with where it came from, for error messages.

    The place is 1-based everywhere: ``"data.jsonl: line 12"`` for JSON lines (blank lines count,
    as in an editor), ``"data.json: item 3"`` for a JSON list, ``"data.parquet: row 3"`` for
    parquet and ``datasets`` sources (``"dir (test): row 3"`` for a saved ``DatasetDict``). Bytes
    that are not UTF-8 and lines that are not JSON are a :class:`DataError` naming the file and
    line; so is a directory that ``save_to_disk`` did not write, or a ``DatasetDict`` without
    ``split`` (naming the splits it has).
    """
    if not is_local_source(source):
        import datasets

        return [(f"{source} ({split}): row {i}", dict(r))
                for i, r in enumerate(datasets.load_dataset(source, split=split), 1)]
    if os.path.isdir(source):
        return _read_saved_dataset(source, split)
    if not os.path.isfile(source):
        raise DataError(f"dataset file {source!r} does not exist")
    if source.endswith(".jsonl"):
        located = []
        with open(source, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                where = f"{source}: line {line_no}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: byte {e.start + 1} (0x{raw[e.start]:02x}) is not UTF-8; "
                                    "save the file as UTF-8") from None
                if not line.strip():
                    continue
                try:
                    located.append((where, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise DataError(f"{where} is not valid JSON ({e.msg}, column {e.colno})") from None
    elif source.endswith(".json"):
        with open(source, "rb") as f:
            raw = f.read()
        try:
            data = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            line_no = raw.count(b"\n", 0, e.start) + 1
            col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
            raise DataError(f"{source}: line {line_no}: byte {col} (0x{raw[e.start]:02x}) is not UTF-8; "
                            "save the file as UTF-8") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{source}: line {e.lineno} is not valid JSON ({e.msg}, column {e.colno})") from None
        rows = data["data"] if isinstance(data, dict) and isinstance(data.get("data"), list) else data
        if not isinstance(rows, list):
            raise DataError(f"{source}: expected a JSON list of objects (or {{\"data\": [...]}}), "
                            f"got {type(rows).__name__}")
        located = [(f"{source}: item {i}", r) for i, r in enumerate(rows, 1)]
    elif source.endswith(".parquet"):
        import pyarrow.parquet as pq

        located = [(f"{source}: row {i}", r) for i, r in enumerate(pq.read_table(source).to_pylist(), 1)]
    else:
        raise DataError(f"{source}: unsupported file type; use one of {', '.join(FILE_SUFFIXES)}")
    for where, row in located:
        if not isinstance(row, dict):
            raise DataError(f"{where} is a {type(row).__name__}, expected an object")
    return located


def _read_saved_dataset(source: str, split: str) -> list[tuple[str, dict]]:
    """Rows of a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""
    import datasets

    try:
        ds = datasets.load_from_disk(source)
    except FileNotFoundError:
        raise DataError(f"{source} is a directory but not one written by `datasets`' save_to_disk (no "
                        f"dataset_info.json or dataset_dict.json); use a {', '.join(FILE_SUFFIXES)} file "
                        "or a saved dataset") from None
    place = source
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{source}: the saved DatasetDict has no split {split!r} (data.split); its splits: "
                            f"{', '.join(ds)}")
        ds, place = ds[split], f"{source} ({split})"
    return [(f"{place}: row {i}", dict(r)) for i, r in enumerate(ds.to_list(), 1)]


def read_rows(source: str, split: str = "train") -> list[dict]:
    """All rows of ``source`` as plain dicts (see the module docstring for the formats)."""
    return [row for _, row in read_located_rows(source, split)]


def _question(row: dict, key: str, where: str, what: str = "data.question_key") -> str:
    """``row[key]``, a non-empty string; ``what`` (the setting that chose ``key``) names it in errors."""
    q = row[key]
    if not isinstance(q, str):
        raise DataError(f"{where}: {key!r} ({what}) is {'null' if q is None else type(q).__name__}, "
                        "expected a non-empty string")
    if not q.strip():
        raise DataError(f"{where}: {key!r} ({what}) is empty")
    return q


def _answer(row: dict, key: str, kind: str, where: str, what: str = "data.answer_key") -> str | None:
    """``row[key]`` normalised (:func:`normalize_answer`); None only for rows of kind ``general``."""
    a = row[key]
    if a is None:
        if kind == "general":
            return None
        raise DataError(f"{where}: {key!r} ({what}) is null; only rows of kind 'general' may have "
                        "no answer")
    if not isinstance(a, (str, int, float)):
        raise DataError(f"{where}: {key!r} ({what}) is a {type(a).__name__}, expected a string or "
                        "a number")
    text = normalize_answer(a)
    if not text:
        raise DataError(f"{where}: {key!r} ({what}) is empty")
    return text


def load_prompts(source: str, tokenizer, *, split: str = "train", question_key: str = "question",
                 answer_key: str = "answer", template: str = "r1_zero", max_prompt_len: int = 256,
                 prompts_per_step: int | None = None, kind: str = "reasoning",
                 limit: int | None = None, format: str = "generic",
                 name: str | None = None) -> list[PromptRecord]:
    """Read, template and tokenize every row of ``source``.

    ``format`` is the row layout (:mod:`r1mega.data.benchmarks`): ``generic`` maps
    ``question_key`` / ``answer_key``; ``gsm8k``, ``math``, ``aime`` and ``amc`` read those
    benchmarks' fields; ``auto`` picks one from the first row. The named layouts add
    ``benchmark`` (``name``, default the file's stem) to each record's metadata; ``generic`` does
    when ``name`` is given.

    Raises :class:`DataError`, naming the file, the 1-based line (or item) and the key, for an
    empty dataset, a row without ``question_key`` or ``answer_key`` (or its layout's fields), a
    question that is not a non-empty string, an answer that is null (allowed only when the
    row's ``kind`` is ``general``, in the generic layout), empty or not a string or number, a
    GSM8K answer without ``####``, a MATH row with neither an ``answer`` nor a box in its
    solution, an unknown ``format`` or ``kind``, a prompt over ``max_prompt_len`` tokens, or
    ``prompts_per_step`` above the number of prompts. A row's own ``kind`` field overrides ``kind``.
    """
    from r1mega.data.benchmarks import LAYOUTS, benchmark_name, check_format, resolve_format  # imports this module

    if template not in TEMPLATES:
        raise DataError(f"data.template ({template!r}) must be one of: {', '.join(TEMPLATES)}")
    check_format(format)
    located = read_located_rows(source, split)
    if limit is not None:
        located = located[:limit]
    if not located:
        raise DataError(f"dataset {source!r} is empty (0 rows)")
    layout = resolve_format(format, located[0][1], source, question_key, answer_key)
    adapt = LAYOUTS.get(layout)
    benchmark = name or (benchmark_name(source) if adapt else None)
    records = []
    for i, (where, row) in enumerate(located):
        if adapt is None:
            for key, what in ((question_key, "data.question_key"), (answer_key, "data.answer_key")):
                if key not in row:
                    raise DataError(f"{where} has no {key!r} field ({what}); its keys: "
                                    f"{', '.join(sorted(map(str, row)))}")
        row_kind = row.get("kind", kind)
        if row_kind not in KINDS:
            raise DataError(f"{where}: 'kind' is {row_kind!r}; valid: {', '.join(KINDS)}")
        if adapt is None:
            question, answer = _question(row, question_key, where), _answer(row, answer_key, row_kind, where)
            used: tuple[str, ...] = (question_key, answer_key)
        elif row_kind == "general":
            raise DataError(f"{where}: a row of kind 'general' (no reference answer) needs data.format generic, "
                            f"not {layout}")
        else:
            question, answer, used = adapt(row, where)
        code_language = None
        if layout == "code":
            from r1mega.rewards.code_tests import LANGUAGES

            named = str(row.get("language") or "python").lower()
            code_language = LANGUAGES.get(named, named)
        text = render_prompt(question, template, tokenizer, code_language=code_language)
        ids = tokenizer.encode(text)
        if len(ids) > max_prompt_len:
            raise DataError(f"{where}: prompt is {len(ids)} tokens, longer than "
                            f"data.max_prompt_len ({max_prompt_len})")
        meta = {k: v for k, v in row.items() if k not in (*used, "kind")}
        meta.update(source=source, row=i)
        if benchmark:
            meta["benchmark"] = benchmark
        records.append(PromptRecord(index=i, prompt_text=text, prompt_ids=ids, answer=answer,
                                    kind=row_kind, metadata=meta))
    if prompts_per_step is not None and prompts_per_step > len(records):
        raise DataError(f"data.prompts_per_step ({prompts_per_step}) is larger than the dataset "
                        f"{source!r} ({len(records)} prompts)")
    return records


def prompts_from_config(cfg, tokenizer, *, eval: bool = False) -> list[PromptRecord]:
    """:func:`load_prompts` for ``cfg.train`` (or ``cfg.eval``) of a ``DataConfig``. The eval set is
    not checked against ``prompts_per_step`` (it is read whole)."""
    source = cfg.eval if eval else cfg.train
    if source is None:
        raise DataError(f"data.{'eval' if eval else 'train'} is not set")
    return load_prompts(source, tokenizer, split=cfg.split, question_key=cfg.question_key,
                        answer_key=cfg.answer_key, template=cfg.template, max_prompt_len=cfg.max_prompt_len,
                        prompts_per_step=None if eval else cfg.prompts_per_step, format=cfg.format)


def batch_records(records: Sequence[PromptRecord], indices: Sequence[int]) -> list[PromptRecord]:
    """The records at ``indices`` (the sampler's output), in that order."""
    return [records[i] for i in indices]
