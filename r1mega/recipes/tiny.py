"""The embedded tiny default: R1-Zero end to end on a CPU in minutes, with no download.

    1. data       synthetic arithmetic: train / held-out splits (disjoint by question)
    2. tokenizer  sentencepiece trained on the pretraining text (digits split, think tags whole)
    3. base model a tiny Qwen2 pretrained (r1mega SFT on the Megatron policy) on worked solutions,
                  mostly unformatted and half with a wrong final answer, until it computes the
                  worked steps of unseen problems (a measured stop rule, not a step count), so
                  the base can add but rarely says so in the R1 format
    4. eval       held-out pass@1 over k samples, maj@k, greedy accuracy of the base (step 0)
    5. GRPO       R1-Zero: accuracy + format rewards, G samples per prompt, no KL
    6. eval       the same held-out set after RL; summary.json and plots in the run directory

``TinySettings.task`` picks the synthetic task; ``--preset code_check`` is R1-Zero on Python programs
(the ``code`` task, judged by running them in the sandbox); ``--preset longtail`` gives the base a
long tail of response lengths (``recheck_rate``: tools/bench_partial.py, sync against partial rollout).
Under ``torchrun`` every rank takes part (rank 0 writes the data and the tokenizer; pretraining and
RL are data parallel).

``r1mega tiny --seed S`` changes the data, the initial weights and every sampling seed;
``--seeds N`` runs N of them and reports the spread (:mod:`r1mega.recipes.seeds`).

Every knob is in :class:`TinySettings`; the RL part is the ordinary ``r1mega train`` config
(``r1mega/recipes/tiny_cpu.yaml``, shipped in the wheel), so what the tiny run does is what a real run does.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field

log = logging.getLogger("r1mega.tiny")

PRESETS = ("default", "quick", "learning_check", "code_check", "longtail", "longtail_skilled")
"""The names :meth:`TinySettings.preset` knows (``r1mega tiny --preset``); each but ``default`` is
the classmethod of that name."""


@dataclass(kw_only=True)
class TinySettings:
    """Sizes of the tiny default. ``quick()`` is the shortened version the test suite runs."""

    task: str = "arithmetic"          # r1mega.data.synthetic task: arithmetic | countdown | code
    n_train: int = 4000               # RL training problems
    n_eval: int = 200                 # held-out problems (in no training or pretraining document)
    n_val: int = 128                  # validation problems of the pretraining stop rule (also unseen)
    task_knobs: dict = field(default_factory=lambda: dict(ops=["+"], min_digits=1, max_digits=2))
    template: str = "r1_zero_compact"
    format_rate: float = 0.5          # share of pretraining completions in the R1 format
    correct_rate: float = 0.3         # share of pretraining completions whose final answer is right
    recheck_rate: float = 0.0         # share of formatted pretraining completions that repeat "check: <steps>"
                                      # (0: none; > 0 gives the base a long tail of response lengths)
    recheck_times: tuple = (3, 8)     # how many times such a completion repeats its steps (inclusive range)
    pretrain_docs: int = 38400
    vocab_size: int = 512
    hidden_size: int = 128
    layers: int = 4
    heads: int = 2
    ffn: int = 384
    pretrain_steps: int = 1000        # budget: pretraining stops here if the target is not reached
    pretrain_target: float = 0.9      # stop once this share of validation worked steps is exact (0: off;
                                      # arithmetic only: the other tasks pretrain for pretrain_steps)
    pretrain_eval_every: int = 50     # steps between checks of the stop rule
    pretrain_batch: int = 64
    pretrain_lr: float = 3e-3
    family: str = "qwen2"
    rl_overrides: list = field(default_factory=list)

    def __post_init__(self):
        from r1mega.data.synthetic import TASKS

        if self.task not in TASKS:
            raise ValueError(f"tiny task ({self.task!r}) must be one of: {', '.join(TASKS)}")
        if self.pretrain_target > 0 and self.task != "arithmetic":
            raise ValueError(f"pretrain_target ({self.pretrain_target}) checks arithmetic's worked steps; the "
                             f"{self.task!r} task has none: set pretrain_target=0 (pretrain for pretrain_steps)")

    @classmethod
    def quick(cls) -> "TinySettings":
        return cls(n_train=64, n_eval=8, n_val=8, pretrain_docs=256, pretrain_steps=6, pretrain_eval_every=3,
                   pretrain_batch=16, vocab_size=512, hidden_size=128, layers=2, ffn=256,
                   rl_overrides=["run.steps=2", "data.prompts_per_step=4", "algorithm.group_size=4",
                                 "data.max_prompt_len=420", "model.max_seq_len=480",
                                 "rollout.max_new_tokens=24", "eval.k=2", "run.save_every=1"])

    @classmethod
    def learning_check(cls) -> "TinySettings":
        """The learning regression test (about a minute): one-digit additions, a base pretrained
        for 200 steps on text that is in the R1 format 30% of the time (it samples the format far
        more rarely), then 12 GRPO steps with accuracy and format weighed alike, whose training
        reward must rise (tests/test_learning.py)."""
        return cls(n_train=64, n_eval=12, n_val=8, task_knobs=dict(ops=["+"], min_digits=1, max_digits=1),
                   format_rate=0.3, correct_rate=0.5, pretrain_docs=4096, pretrain_steps=200, pretrain_target=0.0,
                   pretrain_batch=32, vocab_size=512, hidden_size=128, layers=2, ffn=256,
                   rl_overrides=["run.steps=12", "data.prompts_per_step=8", "algorithm.group_size=8",
                                 "rollout.max_new_tokens=64", "optimizer.lr=5e-4", "eval.k=2",
                                 "reward.weights={accuracy: 1.0, format: 1.0}",
                                 "eval.max_prompts=16", "eval.greedy=false", "run.save_every=0"])

    @classmethod
    def code_check(cls) -> "TinySettings":
        """R1-Zero on code, shortened (tests/test_code_rl.py): Python programs that print a linear
        expression of two input integers, each sample scored by running its program on the row's
        tests in the sandbox (the ``code`` reward, fraction of tests passed). 200 pretraining steps
        teach the answer's form (a fenced program reading a and b) but not yet copying the
        expression: the base's programs run and pass the ``0 0`` test, crash, or (rarely) pass all."""
        return cls(task="code", task_knobs=dict(max_const=0), n_train=64, n_eval=8, n_val=0, format_rate=0.5,
                   correct_rate=0.5, pretrain_docs=2048, pretrain_steps=200, pretrain_target=0.0,
                   pretrain_batch=16, vocab_size=512, hidden_size=128, layers=2, ffn=256,
                   rl_overrides=["run.steps=2", "data.prompts_per_step=4", "algorithm.group_size=4",
                                 "rollout.max_new_tokens=80", "reward.weights={code: 1.0, format: 0.2}",
                                 "reward.code_scoring=fraction", "reward.timeout_s=30", "eval.k=2",
                                 "run.save_every=0"])

    @classmethod
    def longtail(cls) -> "TinySettings":
        """Response lengths with a long tail (tools/bench_partial.py: sync against partial rollout):
        one-digit additions and subtractions on ``learning_check``'s small model, pretrained for 600
        steps (about 3 minutes on 2 CPU cores) on text in which 15% of the formatted completions
        re-check their steps 3-8 times before ``</think>``. Sampled at temperature 1 the base answers
        mostly in 20-60 tokens and now and then runs on with "check: ..." to 4-6 times that or to
        ``rollout.max_new_tokens`` (224): a sync step waits for its longest response. Measured at seed
        0 (512 samples): mean 40 tokens, p50 29, p90 46, p99 222, 9% over 56 and 1% at the limit;
        36% in the R1 format, 7% right (a weak base: the held-out pass@1 is a sanity check here, and
        eval.k=8 samples per prompt keep its resolution at 1/256)."""
        return cls(n_train=128, n_eval=32, n_val=8, task_knobs=dict(ops=["+", "-"], min_digits=1, max_digits=1),
                   format_rate=0.5, correct_rate=0.5, recheck_rate=0.15, pretrain_docs=4096, pretrain_steps=600,
                   pretrain_target=0.0, pretrain_batch=32, vocab_size=512, hidden_size=128, layers=2, ffn=256,
                   rl_overrides=["run.steps=16", "data.prompts_per_step=8", "algorithm.group_size=8",
                                 "rollout.max_new_tokens=224", "data.max_prompt_len=96", "optimizer.lr=5e-4",
                                 "eval.k=8", "reward.weights={accuracy: 1.0, format: 1.0}", "eval.max_prompts=32",
                                 "eval.greedy=false", "run.save_every=0"])

    @classmethod
    def longtail_skilled(cls) -> "TinySettings":
        """``longtail``'s long tail on a base that can add: the default's task (additions of one-
        and two-digit numbers) and model (4 layers), pretrained until 90% of the validation worked
        steps are exact (at most 1000 steps), on text in which 15% of the formatted completions
        re-check their steps 3-8 times. Its held-out pass@1 is well above chance (``longtail``'s
        is near it), so it tells whether a rollout mode costs accuracy, not only format. RL as the
        default's (lr 1e-4, accuracy 1.0 + format 0.2), 16 steps of 8 prompts x 8."""
        return cls(n_train=256, n_eval=64, n_val=64, correct_rate=0.5, recheck_rate=0.15,
                   rl_overrides=["run.steps=16", "data.prompts_per_step=8", "algorithm.group_size=8",
                                 "rollout.max_new_tokens=224", "data.max_prompt_len=96", "eval.k=8",
                                 "eval.max_prompts=64", "eval.greedy=false", "run.save_every=0"])

    @classmethod
    def preset(cls, name: str) -> "TinySettings":
        """``default``, ``quick`` (the plumbing test), ``learning_check``, ``code_check``, ``longtail``
        or ``longtail_skilled``."""
        if name not in PRESETS:
            raise ValueError(f"unknown tiny preset {name!r}; valid: {', '.join(PRESETS)}")
        return cls() if name == "default" else getattr(cls, name)()


@dataclass
class TinyData:
    """What :func:`prepare_data` makes: the RL splits on disk, and the pretraining text in memory."""

    train_path: str     # RL training prompts (jsonl)
    eval_path: str      # held-out prompts (jsonl)
    docs: list          # pretraining documents
    val_rows: list      # validation problems of the pretraining stop rule


def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier():
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()


def prepare_data(out: str, s: TinySettings, seed: int) -> TinyData:
    """Splits as jsonl and the pretraining documents (rank 0 writes; others read). The held-out
    and validation questions are in no pretraining document."""
    from r1mega.data.synthetic import make_splits, pretraining_corpus, write_jsonl

    pool, held = make_splits(s.task, s.n_train + s.n_val, s.n_eval, seed=seed, **s.task_knobs)
    train, val = pool[:s.n_train], pool[s.n_train:]
    train_path, eval_path = os.path.join(out, "data", "train.jsonl"), os.path.join(out, "data", "eval.jsonl")
    docs = pretraining_corpus(s.pretrain_docs, seed=seed, task=s.task, format_rate=s.format_rate,
                              correct_rate=s.correct_rate, exclude=[r["question"] for r in held + val],
                              template=s.template, recheck_rate=s.recheck_rate, recheck_times=s.recheck_times,
                              **s.task_knobs)
    if _rank() == 0:
        os.makedirs(os.path.dirname(train_path), exist_ok=True)
        write_jsonl(train, train_path)
        write_jsonl(held, eval_path)
    _barrier()
    return TinyData(train_path, eval_path, docs, val)


def worked_steps_examples(rows: list[dict], tok, template: str, bos: int) -> list:
    """Validation examples of the pretraining stop rule: each row's document in the R1 format with
    the right answer, loss (and so the exact-match check) on its worked steps and the restated
    operands only ("7+4=11, write 1, carry 1. ... so 967+4="): the tokens that the question fully
    determines. The final answer is left out: pretraining teaches it wrong half of the time."""
    from r1mega.data.prompts import render_prompt
    from r1mega.data.synthetic import arithmetic_steps, completion
    from r1mega.trainer.sft import example

    out = []
    for r in rows:
        prompt = render_prompt(r["question"], template)
        doc = prompt + completion(r, None, formatted=True, correct=True)
        ids = tok.encode(doc)
        start = len(tok.encode(prompt + " <think>"))
        end = len(tok.encode(prompt + " <think> " + ". ".join(arithmetic_steps(r)) + f". so {r['a']}{r['op']}{r['b']}="))
        if not 0 < start < end < len(ids):
            raise ValueError(f"cannot locate the worked steps of {r['question']!r} in its tokens")
        mask = [1 if start <= i < end else 0 for i in range(len(ids))] + [0]
        out.append(example([bos], ids + [tok.eos_id], mask))
    return out


def build_base(out: str, s: TinySettings, docs: list[str], cfg, val_rows=()) -> tuple[str, str]:
    """Tokenizer + random tiny Qwen2 or Llama (HF, ``s.family``) -> pretrained with r1mega SFT ->
    (HF directory, tokenizer directory).

    Pretraining stops on a measured target, not a step count: every ``s.pretrain_eval_every``
    steps the worked steps of ``val_rows`` (:func:`worked_steps_examples`) are checked, and once
    a share ``s.pretrain_target`` of them is exact the base is done (``s.pretrain_steps`` is the
    budget). A tiny transformer learns to fetch the right operand digit abruptly, after a number
    of steps that depends on the seed and on the CPU's float kernels; a fixed step count gave a
    base that could or could not add, and RL's gain followed it. The record of the checks goes
    to ``out/pretrain.json``."""
    import torch
    import transformers

    from r1mega.data.tokenizer import load_tokenizer, train_sentencepiece
    from r1mega.models import export_hf
    from r1mega.trainer.sft import build_policy, eval_loss, example, run_sft

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
    bos = tok.bos_id if tok.bos_id is not None else tok.eos_id
    examples = [example([bos], tok.encode(d) + [tok.eos_id]) for d in docs]
    val = worked_steps_examples(list(val_rows), tok, s.template, bos) if s.pretrain_target > 0 else []
    from r1mega.config import config_from_dict, to_dict
    sft_cfg = config_from_dict(to_dict(cfg), [f"model.hf_path={init_dir}", f"model.tokenizer_path={tok_dir}",
                                              f"optimizer.lr={s.pretrain_lr}",
                                              f"optimizer.min_lr={s.pretrain_lr / 10}", "optimizer.decay=cosine",
                                              "optimizer.warmup_steps=10", "optimizer.weight_decay=0.0"])
    from r1mega.logging.progress import StepProgress
    policy = build_policy(sft_cfg, s.pretrain_steps)
    bar = StepProgress(s.pretrain_steps, rank=_rank(), desc="pretrain")
    checks: list[dict] = []
    done = {"steps": 0, "reached": False}

    def on_step(step: int, st: dict) -> bool:
        done["steps"] = step
        if val and (step % s.pretrain_eval_every == 0 or step == s.pretrain_steps):
            m = eval_loss(policy, val, tok.pad_id)  # collective: every rank decides alike
            checks.append({"step": step, "train_loss": st["loss"], "val_steps_loss": m["sft/eval_loss"],
                           "val_steps_exact": m["sft/eval_exact"]})
            done["reached"] = m["sft/eval_exact"] >= s.pretrain_target
            if _rank() == 0:
                log.info("pretrain step %d: %.1f%% of the validation worked steps exact (target %.0f%%), "
                         "their loss %.4f", step, 100 * m["sft/eval_exact"], 100 * s.pretrain_target,
                         m["sft/eval_loss"])
        bar.update(step, {"loss": st["loss"], **({"sft/eval_exact": checks[-1]["val_steps_exact"]} if checks else {})})
        return done["reached"]

    run_sft(sft_cfg, examples, steps=s.pretrain_steps, examples_per_step=s.pretrain_batch, policy=policy,
            on_step=on_step, pad_id=tok.pad_id)
    bar.close()
    record = {"target": s.pretrain_target, "budget": s.pretrain_steps, "steps": done["steps"],
              "reached": done["reached"], "checks": checks}
    if _rank() == 0:
        with open(os.path.join(out, "pretrain.json"), "w") as f:
            json.dump(record, f, indent=2)
        if val and not record["reached"]:
            log.warning("pretraining used its budget of %d steps without reaching the target: %.1f%% of the "
                        "validation worked steps exact (target %.1f%%); RL starts from a weaker base",
                        s.pretrain_steps, 100 * checks[-1]["val_steps_exact"], 100 * s.pretrain_target)
    export_hf(policy.modules, policy.arch, base_dir, tokenizer_dir=None)
    _barrier()  # every rank reads base/ and pretrain.json next
    return base_dir, tok_dir


def run_tiny(out: str, *, quick: bool = False, config_path: str | None = None, overrides=(),
             seed: int | None = None, preset: str | None = None) -> dict:
    """Run the whole tiny default; returns (and writes) ``summary.json``. ``seed`` (default: the
    config's ``run.seed``) decides the data, the initial weights and every sampling seed;
    ``preset`` picks :meth:`TinySettings.preset` (``quick=True`` is the ``quick`` preset)."""
    from r1mega.config import load_config
    from r1mega.logging.metrics import METRICS_FILE, read_metrics
    from r1mega.rollout.groups import make_engine
    from r1mega.trainer.loop import train

    t0 = time.perf_counter()
    s = TinySettings.preset(preset or ("quick" if quick else "default"))
    config_path = config_path or default_config_path()
    os.makedirs(out, exist_ok=True)
    overrides = [*s.rl_overrides, *overrides, *([f"run.seed={seed}"] if seed is not None else [])]
    base_cfg = load_config(config_path, [f"run.output_dir={out}", *overrides])
    from r1mega.parallel.init import init_distributed

    init_distributed(base_cfg.run)  # torchrun: rank 0 writes the data and the tokenizer, the others wait
    data = prepare_data(out, s, base_cfg.run.seed)
    t_pre = time.perf_counter()
    base_dir, tok_dir = build_base(out, s, data.docs, base_cfg, data.val_rows)
    pretrain_s = time.perf_counter() - t_pre
    cfg = load_config(config_path, [f"run.output_dir={out}", f"model.hf_path={base_dir}",
                                    f"model.tokenizer_path={tok_dir}", f"data.train={data.train_path}",
                                    f"data.eval={data.eval_path}", f"data.template={s.template}",
                                    "eval.before_train=true", *overrides])
    engine = make_engine(cfg, base_dir)
    t_rl = time.perf_counter()
    final = train(cfg, engine=engine).metrics  # evaluates the base first (step 0), then the policy at the end
    rl_s = time.perf_counter() - t_rl
    run_dir = os.path.join(cfg.run.output_dir, cfg.run.name)
    evals = [r for r in read_metrics(os.path.join(run_dir, METRICS_FILE)) if "eval/pass@1" in r]
    before = {k: v for k, v in evals[0].items() if k.startswith("eval/")} if evals and evals[0]["step"] == 0 else {}
    after = {k: v for k, v in final.items() if k.startswith("eval/")}
    with open(os.path.join(out, "pretrain.json")) as f:
        pretrain = json.load(f)
    summary = {
        "seed": cfg.run.seed, "before": before, "after": after,
        "gain_pass@1": after.get("eval/pass@1", float("nan")) - before.get("eval/pass@1", float("nan")),
        "held_out_prompts": int(before.get("eval/prompts", 0)), "rl_steps": cfg.run.steps,
        "pretrain_steps": pretrain["steps"], "pretrain_reached_target": pretrain["reached"],
        "pretrain_val_exact": pretrain["checks"][-1]["val_steps_exact"] if pretrain["checks"] else None,
        "wall_time_s": time.perf_counter() - t0, "pretrain_s": pretrain_s, "rl_s": rl_s,
        "settings": asdict(s), "run_dir": run_dir, "policy_hf": os.path.join(run_dir, "hf"), "tokenizer": tok_dir,
    }
    if _rank() == 0:
        from r1mega.logging.plots import plot_run
        summary["plots"] = [str(p) for p in plot_run(run_dir, out)]
        with open(os.path.join(out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return summary


def default_config_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "tiny_cpu.yaml")
