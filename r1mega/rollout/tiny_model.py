"""A tiny random Qwen2 model + word-level tokenizer, saved as a Hugging Face directory.

Used by the rollout tests, ``tools/bench_rollout.py`` and CPU smoke runs: no hub download,
builds in well under a second. head_dim is 64 because vLLM's CPU attention needs >= 64.
"""

from __future__ import annotations

import json
import os

# Text the tiny byte-level BPE is trained on: the words of the R1 template and of simple
# arithmetic prompts, so those come out as one or two tokens each.
_CORPUS_WORDS = (
    "the a an is of to and in that it for on with as was at by be this are or from not but "
    "what which one two three four five six seven eight nine ten plus minus times equals "
    "answer think question user assistant reason step first then so therefore final box "
    "<think> </think> <answer> </answer> + - * / = ( ) . , ? ! : ; \\boxed{ } hello world"
).split()
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE ``Qwen2Tokenizer`` with ``vocab_size`` entries, trained on a few words.

    Byte-level, so every string encodes (no unknown tokens). It uses the Qwen2 pre-tokenizer
    and decoder, because transformers loads a ``qwen2`` model directory's tokenizer as
    ``Qwen2Tokenizer`` whatever ``tokenizer_config.json`` says. EOS is ``<|endoftext|>`` (id 0).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = [" ".join(_CORPUS_WORDS[i:] + _CORPUS_WORDS[:i]) for i in range(len(_CORPUS_WORDS))]
    corpus += [f"{a} plus {b} equals {a + b}" for a in range(20) for b in range(20)]
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" "))
                                                         for m in model["merges"]],
                          eos_token="<|endoftext|>", pad_token="<|pad|>", unk_token=None)


def build_tiny_qwen2(out_dir: str, *, hidden: int = 128, heads: int = 2, kv_heads: int = 1,
                     layers: int = 2, intermediate: int = 256, vocab_size: int = 512,
                     max_positions: int = 512, tie_embeddings: bool = True, seed: int = 0,
                     init_std: float = 0.2) -> str:
    """Save a random fp32 Qwen2 model and its tokenizer to ``out_dir``; returns ``out_dir``.

    ``init_std`` is larger than the usual 0.02 so the random model has peaked, varied
    next-token distributions (makes greedy parity and logprob tests meaningful).
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads,
                      num_key_value_heads=kv_heads, head_dim=hidden // heads,
                      max_position_embeddings=max_positions, tie_word_embeddings=tie_embeddings,
                      initializer_range=init_std, bos_token_id=0, eos_token_id=0,
                      pad_token_id=3, torch_dtype="float32")
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    with torch.no_grad():  # random (non-zero) biases so the q/k/v bias path is exercised
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, init_std)
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    build_tiny_tokenizer(vocab_size).save_pretrained(out_dir)
    return out_dir
