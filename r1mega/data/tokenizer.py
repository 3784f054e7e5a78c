"""Tokenizers: one small protocol for the rest of r1mega, and two ways to get one.

* :class:`HFTokenizer` wraps ``transformers.AutoTokenizer`` loaded from a local directory
  (never the hub).
* :class:`SentencePieceTokenizer` wraps a ``tokenizer.model`` trained on local text by
  :func:`train_sentencepiece` (the tiny default): BPE or unigram, ``<think> </think> <answer>
  </answer>`` as single tokens, every digit its own token (arithmetic stays learnable), byte
  fallback (no unknown tokens). Its :meth:`~SentencePieceTokenizer.save` also writes an
  HF tokenizer directory (``tokenizer.json``) that ``AutoTokenizer`` loads with identical ids.

Measured with transformers 5.x: ``AutoTokenizer`` *always* loads the tokenizer of a directory
whose ``config.json`` says ``model_type: qwen2`` as ``Qwen2Tokenizer``, which rebuilds a
byte-level BPE from the vocab and breaks any sentencepiece tokenizer. So keep a sentencepiece
tokenizer in its own directory (no ``config.json``) and hand that directory to vLLM as
``tokenizer=``; or, to ship one self-contained Qwen2 model directory, train the Qwen2-compatible
byte-level BPE with :func:`train_qwen2_bpe` (digits are split by Qwen2's own pre-tokenizer).

The think/answer tags are ordinary (non-special) added tokens: ``decode(..,
skip_special_tokens=True)``, as vLLM detokenizes, keeps them, so the format reward sees them.
transformers, sentencepiece and tokenizers are imported lazily.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Iterable, Protocol, Sequence, runtime_checkable

THINK_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
MARKER = "r1mega_tokenizer.json"  # says which implementation wrote a directory


@runtime_checkable
class Tokenizer(Protocol):
    """What r1mega needs from a tokenizer. ``encode`` never adds BOS/EOS."""

    @property
    def eos_id(self) -> int: ...
    @property
    def pad_id(self) -> int: ...
    @property
    def bos_id(self) -> int | None: ...
    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def apply_chat_template(self, messages: list[dict]) -> str: ...
    def save(self, out_dir: str) -> str: ...


class HFTokenizer:
    """A Hugging Face tokenizer from a local directory (``local_files_only``: no hub access)."""

    def __init__(self, path: str):
        from transformers import AutoTokenizer

        if not os.path.isdir(path):
            raise FileNotFoundError(f"tokenizer directory {path!r} does not exist")
        self.path = path
        try:
            self.hf = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:  # transformers also validates config.json here
            from r1mega.data.prompts import DataError
            raise DataError(f"tokenizer directory {path!r} cannot be loaded by transformers: "
                              f"{str(e).strip().splitlines()[-1]}") from None
        if self.hf.eos_token_id is None:
            raise ValueError(f"tokenizer at {path!r} has no eos token")

    @property
    def eos_id(self) -> int:
        return self.hf.eos_token_id

    @property
    def pad_id(self) -> int:
        return self.hf.pad_token_id if self.hf.pad_token_id is not None else self.hf.eos_token_id

    @property
    def bos_id(self) -> int | None:
        return self.hf.bos_token_id

    @property
    def vocab_size(self) -> int:
        return len(self.hf)  # added tokens included

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict]) -> str:
        if not getattr(self.hf, "chat_template", None):
            raise ValueError(f"tokenizer at {self.path!r} has no chat template; use data.template "
                             f"'r1_zero' or 'plain'")
        return self.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def save(self, out_dir: str) -> str:
        self.hf.save_pretrained(out_dir)
        return out_dir


class SentencePieceTokenizer:
    """A sentencepiece ``tokenizer.model``; text round-trips exactly (identity normalisation)."""

    def __init__(self, model_file: str):
        import sentencepiece as spm

        if not os.path.isfile(model_file):
            raise FileNotFoundError(f"sentencepiece model {model_file!r} does not exist")
        self.model_file = model_file
        self.sp = spm.SentencePieceProcessor(model_file=model_file)
        if self.sp.eos_id() < 0:
            raise ValueError(f"sentencepiece model {model_file!r} has no eos piece")

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    @property
    def pad_id(self) -> int:
        return self.sp.pad_id() if self.sp.pad_id() >= 0 else self.sp.eos_id()

    @property
    def bos_id(self) -> int | None:
        return self.sp.bos_id() if self.sp.bos_id() >= 0 else None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return list(self.sp.encode(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        # sentencepiece drops control pieces (bos/eos/pad) either way
        return self.sp.decode(list(ids))

    def id_to_piece(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    def apply_chat_template(self, messages: list[dict]) -> str:
        raise ValueError(f"sentencepiece tokenizer {self.model_file!r} has no chat template; use "
                         f"data.template 'r1_zero' or 'plain'")

    def save(self, out_dir: str) -> str:
        """Write ``tokenizer.model`` plus an HF tokenizer directory (``tokenizer.json``,
        ``tokenizer_config.json``) loadable by ``AutoTokenizer`` with the same ids."""
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, "tokenizer.model")
        if os.path.abspath(target) != os.path.abspath(self.model_file):
            shutil.copyfile(self.model_file, target)
        _write_hf_files(self.sp, target, out_dir)
        with open(os.path.join(out_dir, MARKER), "w") as f:
            json.dump({"kind": "sentencepiece", "model_file": "tokenizer.model"}, f)
        return out_dir


def _write_hf_files(sp, model_file: str, out_dir: str) -> None:
    """Convert with transformers' own sentencepiece reader (offline), then mark the user-defined
    symbols (think tags) as normal added tokens so ``skip_special_tokens`` keeps them; only
    unk/bos/eos/pad stay special."""
    from transformers import PreTrainedTokenizerFast  # TokenizersBackend in transformers 5

    def piece(i: int) -> str | None:
        return sp.id_to_piece(i) if i >= 0 else None

    specials = dict(unk_token=piece(sp.unk_id()), bos_token=piece(sp.bos_id()),
                    eos_token=piece(sp.eos_id()), pad_token=piece(sp.pad_id()))
    specials = {k: v for k, v in specials.items() if v is not None}
    control = set(specials.values())  # every other added token is a user-defined symbol
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(model_file, os.path.join(tmp, "tokenizer.model"))
        hf = PreTrainedTokenizerFast.from_pretrained(tmp, local_files_only=True, **specials)
        hf.save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(tmp, name)) as f:
                data = json.load(f)
            if name == "tokenizer.json":
                for tok in data.get("added_tokens", []):
                    tok["special"] = tok["content"] in control
            else:
                data["extra_special_tokens"] = [t for t in data.get("extra_special_tokens", []) if t in control]
                for entry in data.get("added_tokens_decoder", {}).values():
                    entry["special"] = entry.get("content") in control
                data.pop("is_local", None)
                data["local_files_only"] = True
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False, indent=1)


def train_sentencepiece(texts: Iterable[str], out_dir: str, vocab_size: int = 512, *,
                        model_type: str = "bpe", user_symbols: Sequence[str] = THINK_TAGS,
                        split_digits: bool = True, byte_fallback: bool = True,
                        max_sentence_length: int = 1 << 16) -> SentencePieceTokenizer:
    """Train a sentencepiece model on ``texts`` and save it (plus the HF files) to ``out_dir``.

    ``vocab_size`` is an upper bound (``hard_vocab_limit=False``: a small corpus gives fewer
    pieces); with byte fallback it must exceed 256 + the distinct characters. Ids: 0 ``<unk>``,
    1 ``<s>``, 2 ``</s>`` (eos), 3 ``<pad>``, then ``user_symbols``. Text is not normalised
    (spaces, newlines and case survive), and no dummy-prefix space is added. Single-threaded
    and deterministic for the same texts.
    """
    import io

    import sentencepiece as spm

    if model_type not in ("bpe", "unigram"):
        raise ValueError(f"model_type ({model_type!r}) must be 'bpe' or 'unigram'")
    texts = [t for t in texts if t]
    if not texts:
        raise ValueError("train_sentencepiece: no non-empty texts to train on")
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=buf, vocab_size=vocab_size, model_type=model_type,
        user_defined_symbols=list(user_symbols), split_digits=split_digits, byte_fallback=byte_fallback,
        character_coverage=1.0, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True, hard_vocab_limit=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3, max_sentence_length=max_sentence_length,
        num_threads=1, minloglevel=2)
    os.makedirs(out_dir, exist_ok=True)
    model_file = os.path.join(out_dir, "tokenizer.model")
    with open(model_file, "wb") as f:
        f.write(buf.getvalue())
    tok = SentencePieceTokenizer(model_file)
    tok.save(out_dir)
    return tok


def train_qwen2_bpe(texts: Iterable[str], out_dir: str, vocab_size: int = 512, *,
                    extra_tokens: Sequence[str] = THINK_TAGS) -> HFTokenizer:
    """Train a byte-level BPE with Qwen2's normaliser, pre-tokenizer (one token per digit) and
    decoder, so it survives ``AutoTokenizer`` inside a ``qwen2`` model directory; saves it to
    ``out_dir`` as a ``Qwen2Tokenizer``. EOS ``<|endoftext|>`` (id 0), pad ``<|pad|>`` (id 1);
    ``extra_tokens`` are added as normal (non-special) tokens."""
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Tokenizer as RawTokenizer
    from transformers import AddedToken, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    raw = RawTokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    raw.train_from_iterator([t for t in texts if t], trainer)
    model = json.loads(raw.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    hf = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|endoftext|>",
                        pad_token="<|pad|>", unk_token=None)
    hf.add_tokens([AddedToken(t, special=False, normalized=False) for t in extra_tokens])
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    return HFTokenizer(out_dir)


def load_tokenizer(path: str) -> Tokenizer:
    """A ``.model`` file -> sentencepiece; a directory written by :meth:`SentencePieceTokenizer.save`
    -> sentencepiece (exact, even next to a qwen2 ``config.json``); any other directory -> HF."""
    if os.path.isfile(path):
        if path.endswith(".model"):
            return SentencePieceTokenizer(path)
        raise ValueError(f"tokenizer path {path!r} is a file but not a sentencepiece .model; "
                         f"give a .model file or a tokenizer directory")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer path {path!r} does not exist")
    marker = os.path.join(path, MARKER)
    if os.path.isfile(marker):
        with open(marker) as f:
            info = json.load(f)
        if info.get("kind") == "sentencepiece":
            return SentencePieceTokenizer(os.path.join(path, info.get("model_file", "tokenizer.model")))
    hf_files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    if not any(os.path.isfile(os.path.join(path, n)) for n in hf_files):
        raise FileNotFoundError(f"{path!r} holds no tokenizer files (looked for {', '.join(hf_files)})")
    return HFTokenizer(path)
