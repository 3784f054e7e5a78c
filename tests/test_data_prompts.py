"""Prompt datasets: formats, field mapping, GSM8K answers, templates, and each documented error."""

import json
import subprocess
import sys

import pytest

from r1mega.data.prompts import (R1_ZERO_TEMPLATE, DataError, load_prompts, normalize_answer, prompts_from_config,
                                 render_prompt)


class CharTokenizer:
    """One id per character: enough to test lengths without training a tokenizer."""

    eos_id, pad_id, bos_id, vocab_size = 0, 0, None, 0x110000

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(map(chr, ids))

    def apply_chat_template(self, messages):
        return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages) + "<|assistant|>"

    def save(self, out_dir):
        return out_dir


TOK = CharTokenizer()


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_jsonl_json_parquet_same_records(tmp_path):
    rows = [{"problem": "What is 2+2?", "solution": "2+2 is 4.\n#### 4", "level": 1},
            {"problem": "Big?", "solution": "#### 1,234", "level": 2}]
    sources = [_jsonl(tmp_path / "a.jsonl", rows)]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    sources += [str(tmp_path / "a.json"), str(tmp_path / "b.json")]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
        sources.append(str(tmp_path / "a.parquet"))
    except ImportError:
        pass
    for src in sources:
        recs = load_prompts(src, TOK, question_key="problem", answer_key="solution", template="plain")
        assert [r.answer for r in recs] == ["4", "1234"], src
        assert [r.prompt_text for r in recs] == ["What is 2+2?", "Big?"]
        assert recs[1].index == 1 and recs[1].prompt_ids == TOK.encode("Big?")
        assert recs[0].kind == "reasoning" and recs[0].metadata == {"level": 1, "source": src, "row": 0}


def test_normalize_answer():
    assert normalize_answer("Natalia sold 48 clips.\n#### 72") == "72"
    assert normalize_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"
    assert normalize_answer(42) == "42" and normalize_answer(2.0) == "2" and normalize_answer(0.5) == "0.5"
    assert normalize_answer("#### -1,000,000") == "-1000000"
    assert normalize_answer("(1, 2)") == "(1, 2)"


def test_r1_zero_template_matches_rewards():
    """A response that follows the template's instruction scores 1 on format (strict, with and
    without answer tags) and accuracy."""
    from r1mega.rewards import RewardConfig, accuracy_reward, format_reward

    prompt = render_prompt("What is 2+3?", "r1_zero")
    assert prompt == R1_ZERO_TEMPLATE.format(question="What is 2+3?")
    assert prompt.endswith("User: What is 2+3?\nAssistant:")
    assert "<think>" in prompt and "<answer>" in prompt and "\\boxed{}" in prompt
    response = " <think> 2+3=5 </think> <answer> \\boxed{5} </answer>"
    for tags in (False, True):
        cfg = RewardConfig(answer_tags=tags, format_mode="strict")
        assert format_reward(response, "5", {}, cfg).score == 1.0
        assert accuracy_reward(response, "5", {}, cfg).score == 1.0


def test_chat_and_plain_templates():
    assert render_prompt("Q?", "plain") == "Q?"
    chat = render_prompt("Q?", "chat", TOK)
    assert chat.startswith("<|user|>Q?\nPlease reason step by step") and chat.endswith("<|assistant|>")
    with pytest.raises(DataError, match="unknown template 'nope'"):
        render_prompt("Q?", "nope")


def test_error_missing_answer_names_file_row_key(tmp_path):
    src = _jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "1"}, {"question": "b", "label": "2"}])
    with pytest.raises(DataError) as e:
        load_prompts(src, TOK, template="plain")
    msg = str(e.value)
    assert src in msg and "line 2" in msg and "'answer'" in msg and "label, question" in msg
    with pytest.raises(DataError, match="line 1 has no 'problem' field"):
        load_prompts(src, TOK, question_key="problem")


def test_error_empty_dataset_names_file(tmp_path):
    src = _jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match=f"dataset '{src}' is empty"):
        load_prompts(src, TOK)
    with pytest.raises(DataError, match="does not exist"):
        load_prompts(str(tmp_path / "missing.jsonl"), TOK)


def test_error_prompt_too_long_names_row_and_lengths(tmp_path):
    src = _jsonl(tmp_path / "d.jsonl", [{"question": "short", "answer": "1"}, {"question": "x" * 50, "answer": "2"}])
    with pytest.raises(DataError) as e:
        load_prompts(src, TOK, template="plain", max_prompt_len=20)
    assert f"{src}: line 2: prompt is 50 tokens, longer than data.max_prompt_len (20)" in str(e.value)


def test_error_more_prompts_per_step_than_dataset(tmp_path):
    src = _jsonl(tmp_path / "d.jsonl", [{"question": str(i), "answer": str(i)} for i in range(3)])
    with pytest.raises(DataError, match=r"data.prompts_per_step \(8\) is larger than the dataset .* \(3 prompts\)"):
        load_prompts(src, TOK, prompts_per_step=8, template="plain")
    assert len(load_prompts(src, TOK, prompts_per_step=3, template="plain")) == 3


def test_bad_json_line_and_null_answer(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "a", "answer": "1"}\n{oops\n')
    with pytest.raises(DataError, match="line 2 is not valid JSON"):
        load_prompts(str(bad), TOK, template="plain")
    src = _jsonl(tmp_path / "n.jsonl", [{"question": "a", "answer": None},
                                        {"question": "b", "answer": None, "kind": "general"}])
    with pytest.raises(DataError, match="line 1: 'answer' \\(data.answer_key\\) is null"):
        load_prompts(src, TOK, template="plain")
    recs = load_prompts(src, TOK, kind="general", template="plain")
    assert recs[1].answer is None and recs[1].kind == "general"


def test_prompts_from_config(tmp_path):
    from r1mega.config.sections import DataConfig

    src = _jsonl(tmp_path / "d.jsonl", [{"q": str(i), "a": i} for i in range(4)])
    cfg = DataConfig(train=src, eval=src, question_key="q", answer_key="a", template="plain", prompts_per_step=2)
    assert [r.answer for r in prompts_from_config(cfg, TOK)] == ["0", "1", "2", "3"]
    assert len(prompts_from_config(cfg, TOK, eval=True)) == 4


def test_data_imports_light():
    code = ("import sys, r1mega.data, r1mega.data.synthetic, r1mega.eval.metrics; "
            "bad = [m for m in ('torch', 'megatron', 'vllm', 'triton', 'transformers') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("row,match", [
    ({"question": "", "answer": "1"}, r"line 3: 'question' \(data.question_key\) is empty"),
    ({"question": "  \n", "answer": "1"}, r"line 3: 'question' \(data.question_key\) is empty"),
    ({"question": None, "answer": "1"}, r"line 3: 'question' \(data.question_key\) is null, expected a non-empty"),
    ({"question": ["a"], "answer": "1"}, r"line 3: 'question' \(data.question_key\) is list"),
    ({"question": "q", "answer": ""}, r"line 3: 'answer' \(data.answer_key\) is empty"),
    ({"question": "q", "answer": "#### "}, r"line 3: 'answer' \(data.answer_key\) is empty"),
    ({"question": "q", "answer": {"v": 1}}, r"line 3: 'answer' \(data.answer_key\) is a dict, expected a string or"),
    ({"question": "q", "answer": "1", "kind": "code"}, r"line 3: 'kind' is 'code'; valid: reasoning, general"),
])
def test_bad_field_values_name_file_line_and_key(tmp_path, row, match):
    """Every bad value is refused at load, with the 1-based line of the file (a blank line counts)."""
    src = tmp_path / "d.jsonl"
    src.write_text(json.dumps({"question": "ok", "answer": "1"}) + "\n\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=match) as e:
        load_prompts(str(src), TOK, template="plain")
    assert str(src) in str(e.value)


def test_non_utf8_bytes_name_file_line_and_byte(tmp_path):
    src = tmp_path / "latin1.jsonl"
    src.write_bytes(b'{"question": "a", "answer": "1"}\n{"question": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl: line 2: byte 18 \(0xe9\) is not UTF-8") as e:
        load_prompts(str(src), TOK, template="plain")
    assert not isinstance(e.value.__cause__, UnicodeDecodeError)  # ours, not the raw decoder error
    doc = tmp_path / "latin1.json"
    doc.write_bytes(b'[\n{"question": "caf\xe9", "answer": "2"}]')
    with pytest.raises(DataError, match=r"latin1\.json: line 2: byte 18 \(0xe9\) is not UTF-8"):
        load_prompts(str(doc), TOK, template="plain")


def test_json_and_parquet_rows_are_located_one_based(tmp_path):
    doc = tmp_path / "d.json"
    doc.write_text(json.dumps({"data": [{"question": "a", "answer": "1"}, {"question": None, "answer": "2"}]}))
    with pytest.raises(DataError, match=r"d\.json: item 2: 'question'"):
        load_prompts(str(doc), TOK, template="plain")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n{"question": "a",\n "answer": }\n]')
    with pytest.raises(DataError, match=r"broken\.json: line 3 is not valid JSON"):
        load_prompts(str(broken), TOK, template="plain")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"question": "a", "answer": "1"}, {"question": "", "answer": "2"}]),
                   str(tmp_path / "d.parquet"))
    with pytest.raises(DataError, match=r"d\.parquet: row 2: 'question' \(data.question_key\) is empty"):
        load_prompts(str(tmp_path / "d.parquet"), TOK, template="plain")
