"""The embedded tiny default: R1-Zero end to end on a CPU in minutes, with no download.

    1. data       synthetic arithmetic: train / held-out splits (disjoint by question)
    2. tokenizer  sentencepiece trained on the pretraining text (digits split, think tags whole)
    3. base model a tiny Qwen2 pretrained (r1mega SFT on the Megatron policy) on worked solutions,
                  many unformatted or wrong, so the base is weak but improvable
    4. eval       held-out pass@1 over k samples, maj@k, greedy accuracy of the base
    5. GRPO       R1-Zero: accuracy + format rewards, G samples per prompt, no KL
    6. eval       the same held-out set after RL; summary.json and plots in the run directory

Every knob is in :class:`TinySettings`; the RL part is the ordinary ``r1mega train`` config
(``examples/tiny_cpu.yaml``), so what the tiny run does is what a real run does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

log = logging.getLogger("r1mega.tiny")


@dataclass(kw_only=True)
class TinySettings:
    """Sizes of the tiny default. ``quick()`` is the shortened version the test suite runs."""

    n_train: int = 4000
    n_eval: int = 200
    task_knobs: dict = field(default_factory=lambda: dict(ops=["+"], min_digits=1, max_digits=3))
    template: str = "r1_zero_compact"
    format_rate: float = 0.5
    correct_rate: float = 0.5
    pretrain_docs: int = 38400
    vocab_size: int = 512
    hidden_size: int = 128
    layers: int = 4
    heads: int = 2
    ffn: int = 384
    pretrain_steps: int = 600
    pretrain_batch: int = 64
    pretrain_lr: float = 3e-3
    family: str = "qwen2"
    rl_overrides: list = field(default_factory=list)

    @classmethod
    def quick(cls) -> "TinySettings":
        return cls(n_train=64, n_eval=8, pretrain_docs=256, pretrain_steps=6, pretrain_batch=16, vocab_size=512,
                   hidden_size=128, layers=2, ffn=256,
                   rl_overrides=["run.steps=2", "data.prompts_per_step=4", "algorithm.group_size=4",
                                 "data.max_prompt_len=420", "model.max_seq_len=480",
                                 "rollout.max_new_tokens=24", "eval.k=2", "run.save_every=1"])


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()


def prepare_data(out: str, s: TinySettings, seed: int) -> tuple[str, str, list[str]]:
    """Splits as jsonl and the pretraining documents (rank 0 writes; others read)."""
    from r1mega.data.synthetic import make_splits, pretraining_corpus, write_jsonl

    train, held = make_splits("arithmetic", s.n_train, s.n_eval, seed=seed, **s.task_knobs)
    train_path, eval_path = os.path.join(out, "data", "train.jsonl"), os.path.join(out, "data", "eval.jsonl")
    docs = pretraining_corpus(s.pretrain_docs, seed=seed, task="arithmetic", format_rate=s.format_rate,
                              correct_rate=s.correct_rate, exclude=[r["question"] for r in held],
                              template=s.template, **s.task_knobs)
    if _rank() == 0:
        os.makedirs(os.path.dirname(train_path), exist_ok=True)
        write_jsonl(train, train_path)
        write_jsonl(held, eval_path)
    _barrier()
    return train_path, eval_path, docs


def build_base(out: str, s: TinySettings, docs: list[str], cfg) -> tuple[str, str]:
    """Tokenizer + random tiny Qwen2 or Llama (HF, ``s.family``) -> pretrained with r1mega SFT ->
    (HF directory, tokenizer directory)."""
    import torch
    import transformers

    from r1mega.data.tokenizer import load_tokenizer, train_sentencepiece
    from r1mega.models import export_hf
    from r1mega.trainer.sft import example, run_sft

    tok_dir, init_dir, base_dir = (os.path.join(out, d) for d in ("tokenizer", "init", "base"))
    if _rank() == 0:
        train_sentencepiece(docs, tok_dir, vocab_size=s.vocab_size)
    _barrier()
    tok = load_tokenizer(tok_dir)
    if _rank() == 0:
        families = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "llama": ("LlamaConfig", "LlamaForCausalLM")}
        if s.family not in families:
            raise ValueError(f"family ({s.family!r}) must be one of {', '.join(families)}")
        config_cls, model_cls = (getattr(transformers, n) for n in families[s.family])
        hf_cfg = config_cls(vocab_size=tok.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.ffn,
                            num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.heads,
                            max_position_embeddings=cfg.model.max_seq_len, tie_word_embeddings=s.family == "qwen2",
                            bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                            rope_theta=10000.0)
        torch.manual_seed(cfg.run.seed)
        model_cls(hf_cfg).save_pretrained(init_dir)
    _barrier()
    examples = [example([tok.bos_id if tok.bos_id is not None else tok.eos_id], tok.encode(d) + [tok.eos_id])
                for d in docs]
    from r1mega.config import config_from_dict, to_dict
    sft_cfg = config_from_dict(to_dict(cfg), [f"model.hf_path={init_dir}", f"model.tokenizer_path={tok_dir}",
                                              f"optimizer.lr={s.pretrain_lr}",
                                              f"optimizer.min_lr={s.pretrain_lr / 10}", "optimizer.decay=cosine",
                                              "optimizer.warmup_steps=10", "optimizer.weight_decay=0.0"])
    from r1mega.logging.progress import StepProgress
    bar = StepProgress(s.pretrain_steps, rank=_rank(), desc="pretrain")
    policy = run_sft(sft_cfg, examples, steps=s.pretrain_steps, examples_per_step=s.pretrain_batch,
                     on_step=lambda step, st: bar.update(step, {"loss": st["loss"]}), pad_id=tok.pad_id)
    bar.close()
    export_hf(policy.modules, policy.arch, base_dir, tokenizer_dir=None)
    return base_dir, tok_dir


def run_tiny(out: str, *, quick: bool = False, config_path: str | None = None, overrides=()) -> dict:
    """Run the whole tiny default; returns (and writes) ``summary.json``."""
    from r1mega.config import load_config
    from r1mega.eval.evaluate import evaluate_engine
    from r1mega.trainer.loop import make_engine, train

    t0 = time.perf_counter()
    s = TinySettings.quick() if quick else TinySettings()
    config_path = config_path or default_config_path()
    os.makedirs(out, exist_ok=True)
    base_cfg = load_config(config_path, [f"run.output_dir={out}", *s.rl_overrides, *overrides])
    train_path, eval_path, docs = prepare_data(out, s, base_cfg.run.seed)
    t_pre = time.perf_counter()
    base_dir, tok_dir = build_base(out, s, docs, base_cfg)
    pretrain_s = time.perf_counter() - t_pre
    cfg = load_config(config_path, [f"run.output_dir={out}", f"model.hf_path={base_dir}",
                                    f"model.tokenizer_path={tok_dir}", f"data.train={train_path}",
                                    f"data.eval={eval_path}", f"data.template={s.template}", *s.rl_overrides, *overrides])
    engine = make_engine(cfg, base_dir)
    from r1mega.data.prompts import prompts_from_config
    from r1mega.data.tokenizer import load_tokenizer
    records = prompts_from_config(cfg.data, load_tokenizer(tok_dir), eval=True)
    before = evaluate_engine(engine, records, cfg)
    t_rl = time.perf_counter()
    final = train(cfg, engine=engine)
    rl_s = time.perf_counter() - t_rl
    after = {k: v for k, v in final.items() if k.startswith("eval/")}
    run_dir = os.path.join(cfg.run.output_dir, cfg.run.name)
    summary = {
        "before": before, "after": after,
        "gain_pass@1": after.get("eval/pass@1", float("nan")) - before.get("eval/pass@1", float("nan")),
        "held_out_prompts": len(records), "rl_steps": cfg.run.steps, "pretrain_steps": s.pretrain_steps,
        "wall_time_s": time.perf_counter() - t0, "pretrain_s": pretrain_s, "rl_s": rl_s,
        "settings": asdict(s), "run_dir": run_dir, "policy_hf": os.path.join(run_dir, "hf"), "tokenizer": tok_dir,
    }
    if _rank() == 0:
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        from r1mega.logging.plots import plot_run
        summary["plots"] = [str(p) for p in plot_run(run_dir, out)]
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def default_config_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "tiny_cpu.yaml")
