"""SFT data: prompt/response and chat rows -> examples with the right loss masks; bad rows name
file, row and key; over-long examples dropped / truncated / refused."""

import json

import pytest

from r1mega.config import config_from_dict
from r1mega.data import DataError
from r1mega.data.sft import load_sft_examples

QWEN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class CharTokenizer:
    """One id per character (ids 4..), EOS 1, BOS 2, pad 0: every id is checkable by hand."""

    eos_id, bos_id, pad_id = 1, 2, 0

    def encode(self, text):
        return [4 + ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i - 4) for i in ids if i >= 4)


@pytest.fixture(scope="module")
def hf_tok(tmp_path_factory):
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.rollout.tiny_model import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    tok.chat_template = QWEN_TEMPLATE
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return load_tokenizer(str(path))


def write(tmp_path, rows, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(p)


def sft_cfg(**kw):
    return config_from_dict({"sft": kw}).sft


def test_prompt_response_rows(tmp_path):
    tok = CharTokenizer()
    src = write(tmp_path, [{"prompt": "Q: 1+1?", "response": " 2"}, {"question": "x", "prompt": "", "response": "y"}])
    ex, st = load_sft_examples(src, tok, sft_cfg(), max_len=64)
    assert ex[0].prompt_ids == tok.encode("Q: 1+1?") and ex[0].response_ids == tok.encode(" 2") + [1]
    assert ex[0].response_mask is None
    assert ex[1].prompt_ids == [2]  # an empty prompt starts from BOS
    assert st.examples == 2 and st.loss_tokens == 3 + 2 and st.formats == {"prompt_response": 2}


def test_prompt_template_applies(tmp_path):
    from r1mega.data.prompts import render_prompt

    tok = CharTokenizer()
    src = write(tmp_path, [{"prompt": "2+3?", "response": "5"}])
    ex, _ = load_sft_examples(src, tok, sft_cfg(prompt_template="r1_zero_compact"), max_len=512)
    assert tok.decode(ex[0].prompt_ids) == render_prompt("2+3?", "r1_zero_compact")


def test_plain_chat_format_masks_only_assistant_turns(tmp_path):
    tok = CharTokenizer()
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo"}, {"role": "user", "content": "ok?"},
            {"role": "assistant", "content": "k"}, {"role": "user", "content": "trailing"}]
    src = write(tmp_path, [{"messages": msgs}])
    (ex,), st = load_sft_examples(src, tok, sft_cfg(), max_len=256)
    assert tok.decode(ex.prompt_ids) == "System: S\nUser: hi\nAssistant:"
    text = tok.decode(ex.response_ids)
    assert text == " yo\nUser: ok?\nAssistant: k"  # EOS ids decode to nothing; trailing user turn dropped
    trained = [t for t, m in zip(ex.response_ids, ex.response_mask) if m]
    assert trained == tok.encode(" yo") + [1] + tok.encode(" k") + [1]
    assert st.formats == {"messages": 1}


def test_chat_template_masks_assistant_content(tmp_path, hf_tok):
    msgs = [{"role": "user", "content": "two plus two"}, {"role": "assistant", "content": "four"},
            {"role": "user", "content": "and one"}, {"role": "assistant", "content": "five"}]
    src = write(tmp_path, [{"messages": msgs}])
    (ex,), _ = load_sft_examples(src, hf_tok, sft_cfg(), max_len=256)
    assert hf_tok.decode(ex.prompt_ids) == "<|im_start|>user\ntwo plus two<|im_end|>\n<|im_start|>assistant\n"
    trained = hf_tok.decode([t for t, m in zip(ex.response_ids, ex.response_mask) if m])
    assert trained == "four<|im_end|>\nfive<|im_end|>\n"
    full = hf_tok.decode(ex.prompt_ids + ex.response_ids)
    assert full == hf_tok.hf.apply_chat_template(msgs, tokenize=False)


def test_overlong_modes(tmp_path):
    tok = CharTokenizer()
    src = write(tmp_path, [{"prompt": "abc", "response": "x" * 20}, {"prompt": "a", "response": "b"}])
    ex, st = load_sft_examples(src, tok, sft_cfg(overlong="drop"), max_len=10)
    assert len(ex) == 1 and st.dropped_overlong == 1
    ex, st = load_sft_examples(src, tok, sft_cfg(overlong="truncate"), max_len=10)
    assert [e.num_tokens for e in ex] == [10, 3] and st.truncated == 1
    with pytest.raises(DataError, match=r"line 1: 3 prompt \+ 21 response tokens exceed the maximum length 10"):
        load_sft_examples(src, tok, sft_cfg(overlong="error"), max_len=10)


@pytest.mark.parametrize("rows,cfg,match", [
    ([{"prompt": "a"}], {}, r"line 1 has no 'response' field \(sft.response_key\); its keys: prompt"),
    ([{"prompt": "a", "answer": "b"}], {"response_key": "answer", "prompt_key": "q"}, r"no 'q' field"),
    ([{"prompt": 3, "response": "b"}], {}, r"line 1: 'prompt' \(sft.prompt_key\) is a int, expected a string"),
    ([{"messages": [{"role": "user", "content": "x"}]}], {}, r"line 1: no assistant message"),
    ([{"messages": [{"role": "bot", "content": "x"}]}], {}, r"line 1: message 1 has role 'bot'"),
    ([{"messages": "hi"}], {}, r"must be a non-empty list"),
    ([], {}, r"is empty \(0 rows\)"),
])
def test_bad_rows_name_file_row_and_key(tmp_path, rows, cfg, match):
    src = write(tmp_path, rows)
    with pytest.raises(DataError, match=match) as e:
        load_sft_examples(src, CharTokenizer(), sft_cfg(**cfg), max_len=64)
    assert src in str(e.value)


def test_all_rows_overlong_is_an_error(tmp_path):
    src = write(tmp_path, [{"prompt": "abc", "response": "x" * 20}])
    with pytest.raises(DataError, match="no example left"):
        load_sft_examples(src, CharTokenizer(), sft_cfg(), max_len=8)
