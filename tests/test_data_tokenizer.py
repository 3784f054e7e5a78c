"""Tokenizers: sentencepiece training, HF export round trip, digits and think tags, load_tokenizer."""

import json
import os
import random

import pytest

from r1mega.data.synthetic import pretraining_corpus
from r1mega.data.tokenizer import (THINK_TAGS, HFTokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer,
                                   train_qwen2_bpe, train_sentencepiece)

SAMPLES = [
    "What is 1234 + 56?", "<think> 4+6=10, write 0 </think> <answer> \\boxed{1290} </answer>",
    "  two  spaces\n\nnewlines\n", " leading", "trailing ", "", "\n", "tab\there", "é ü 漢字 🙂",
    "-42.5 and 3/4", "<think></think><answer></answer>", "User: x\nAssistant: <think>",
]


def _fuzz(n=400, seed=0):
    rng = random.Random(seed)
    alpha = list("abcxyz ABC0123456789+-*/=()?.,{}\\\n\t") + list(THINK_TAGS) + ["  ", "é", "boxed", " What"]
    return ["".join(rng.choice(alpha) for _ in range(rng.randint(0, 30))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus():
    return pretraining_corpus(300, seed=0, format_rate=0.5, correct_rate=0.5)


@pytest.fixture(scope="module")
def sp_dir(tmp_path_factory, corpus):
    out = str(tmp_path_factory.mktemp("sp"))
    train_sentencepiece(corpus, out, vocab_size=400)
    return out


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_digits_and_tags(tmp_path, corpus, model_type):
    tok = train_sentencepiece(corpus, str(tmp_path), vocab_size=400, model_type=model_type)
    assert isinstance(tok, Tokenizer)
    assert (tok.eos_id, tok.pad_id, tok.bos_id) == (2, 3, 1)
    assert os.path.isfile(tmp_path / "tokenizer.model")
    for tag in THINK_TAGS:
        assert len(tok.encode(tag)) == 1, tag
    digit_pieces = tok.id_to_piece(tok.encode("12345 + 67890"))
    assert [p for p in digit_pieces if any(c.isdigit() for c in p)] == list("1234567890")
    for s in SAMPLES + _fuzz(100):
        assert tok.decode(tok.encode(s)) == s  # byte fallback + identity normalisation: lossless


def test_sentencepiece_hf_round_trip(sp_dir):
    from transformers import AutoTokenizer

    sp = SentencePieceTokenizer(os.path.join(sp_dir, "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(sp_dir, local_files_only=True)
    for s in SAMPLES + _fuzz():
        ids = sp.encode(s)
        assert hf.encode(s, add_special_tokens=False) == ids, repr(s)
        assert hf.encode(s) == ids  # no BOS/EOS added either
        assert hf.decode(ids) == s
    # vLLM detokenizes with skip_special_tokens=True: the tags must survive it, eos must not
    ids = sp.encode("<think> 1+1=2 </think> <answer> \\boxed{2} </answer>") + [sp.eos_id]
    assert hf.decode(ids, skip_special_tokens=True) == "<think> 1+1=2 </think> <answer> \\boxed{2} </answer>"
    assert (hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == (sp.eos_id, sp.pad_id, sp.bos_id)
    assert len(hf) == sp.vocab_size


def test_load_tokenizer_picks_implementation(sp_dir, tmp_path):
    assert isinstance(load_tokenizer(sp_dir), SentencePieceTokenizer)
    assert isinstance(load_tokenizer(os.path.join(sp_dir, "tokenizer.model")), SentencePieceTokenizer)
    hf_only = tmp_path / "hf"
    hf_only.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (hf_only / name).write_bytes((open(os.path.join(sp_dir, name), "rb")).read())
    tok = load_tokenizer(str(hf_only))
    assert isinstance(tok, HFTokenizer)
    s = SAMPLES[1]
    assert tok.encode(s) == load_tokenizer(sp_dir).encode(s)
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        (tmp_path / "empty").mkdir()
        load_tokenizer(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no chat template"):
        load_tokenizer(sp_dir).apply_chat_template([{"role": "user", "content": "hi"}])


def test_sentencepiece_next_to_qwen2_config(sp_dir, tmp_path):
    """transformers forces Qwen2Tokenizer in a qwen2 directory (documented in tokenizer.py):
    load_tokenizer still reads the exact sentencepiece model there, via the marker file."""
    from transformers import Qwen2Config

    model_dir = tmp_path / "model"
    SentencePieceTokenizer(os.path.join(sp_dir, "tokenizer.model")).save(str(model_dir))
    Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=1, num_key_value_heads=1).save_pretrained(str(model_dir))
    tok = load_tokenizer(str(model_dir))
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.encode(SAMPLES[1]) == load_tokenizer(sp_dir).encode(SAMPLES[1])


def test_qwen2_bpe_survives_qwen2_model_dir(corpus, tmp_path):
    from transformers import AutoTokenizer, Qwen2Config

    out = str(tmp_path / "q")
    tok = train_qwen2_bpe(corpus, out, vocab_size=400)
    Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=1, num_key_value_heads=1).save_pretrained(out)
    hf = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert type(hf).__name__ == "Qwen2Tokenizer"
    for s in SAMPLES + _fuzz(200):
        ids = tok.encode(s)
        assert hf.encode(s, add_special_tokens=False) == ids, repr(s)
        assert hf.decode(ids) == s
    for tag in THINK_TAGS:
        assert len(tok.encode(tag)) == 1
    pieces = hf.convert_ids_to_tokens(tok.encode("12345"))
    assert pieces == list("12345")
    assert hf.decode(tok.encode("<think> a </think>") + [tok.eos_id], skip_special_tokens=True) == "<think> a </think>"
    assert (tok.eos_id, tok.pad_id) == (0, 1)
    assert json.load(open(os.path.join(out, "tokenizer_config.json")))["eos_token"] == "<|endoftext|>"
