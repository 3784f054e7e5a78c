"""Data: tokenizers, prompt datasets, per-rank sampling, synthetic tasks. Imports no torch, megatron,
vllm or triton (transformers/sentencepiece load lazily, inside the tokenizer functions)."""

from r1mega.data.prompts import (DataError, PromptRecord, batch_records, load_prompts, normalize_answer,
                                 prompts_from_config, read_located_rows, read_rows, render_prompt)
from r1mega.data.sampler import PromptSampler
from r1mega.data.tokenizer import (HFTokenizer, SentencePieceTokenizer, Tokenizer, load_tokenizer,
                                   train_qwen2_bpe, train_sentencepiece)

__all__ = [
    "DataError", "HFTokenizer", "PromptRecord", "PromptSampler", "SentencePieceTokenizer", "Tokenizer",
    "batch_records", "load_prompts", "load_tokenizer", "normalize_answer", "prompts_from_config",
    "read_located_rows", "read_rows", "render_prompt", "train_qwen2_bpe", "train_sentencepiece",
]
