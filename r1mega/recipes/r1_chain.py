"""The DeepSeek-R1 pipeline end to end on the tiny default (``r1mega r1-chain``), on one CPU.

    0. base          tokenizer + tiny Qwen2 pretrained on worked arithmetic (as ``r1mega tiny``)
    1. cold start    SFT on long, well-formatted chains of thought (<think> .. </think> <answer> ..)
    2. reasoning RL  GRPO with accuracy + format + language-consistency rewards
    3. rejection     k samples per training prompt from the RL policy; keep the correct, clean,
                     distinct ones (r1mega reject-sample), plus non-reasoning (general) SFT rows
    4. SFT           the base fine-tuned on that dataset (R1 fine-tunes the base, not the RL policy)
    5. reward model  Bradley-Terry on preference pairs of the general domain (r1mega train-rm)
    6. all-scenario  GRPO on mixed batches: rule rewards for reasoning prompts, the reward model
       RL            for general ones (a per-sample ``kind``)
    7. distillation  a smaller student of another family (Llama) with its own tokenizer, SFT on
                     the teacher's rejection-sampled dataset (text, re-tokenised), no RL

After every stage its model is evaluated on the same held-out sets: pass@1 over k samples,
maj@k and greedy accuracy on arithmetic, and on general prompts the share of greedy replies
that satisfy the preference rule the reward model was trained on (its ground truth). The table
goes to ``OUT/chain.md`` and ``OUT/chain.json``. Each stage's output feeds the next and a
finished stage is not run again, so an interrupted chain resumes where it stopped.

Every RL stage must earn its place, on every seed (``r1mega r1-chain --seeds N`` checks it; the
gains go to ``chain.json`` / ``chain.md``):

- reasoning RL must raise pass@1 over the cold-start model. The cold start is therefore small
  (128 chains of thought, seen once), as R1's is small next to its RL: it teaches the format and
  part of the skill. A cold start larger than the RL stage's prompt budget (1,024 examples, 40
  steps, in the first version) saturated the model, and RL then lowered pass@1 (0.68 -> 0.61).
- all-scenario RL must raise the general-prompt metric (the share of replies that follow the
  reward model's rule) without losing pass@1. SFT therefore sees only 32 general rows, so it
  teaches the rule partly and the reward-model-led RL stage has the rest to teach; with 256 rows
  SFT taught it fully (1.0) and the RL stage could only hold it.

Every stage is the ordinary command run in this process; with several GPUs run the same
commands under torchrun (the README lists them). Sizes live in :class:`ChainSettings`;
``quick()`` is the shortened configuration the test suite runs end to end.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field

from r1mega.recipes.tiny import TinySettings

log = logging.getLogger("r1mega.chain")


@dataclass(kw_only=True)
class ChainSettings:
    """Sizes and per-stage config overrides (``key.sub=value``, on top of the tiny RL config)."""

    teacher: TinySettings = field(default_factory=TinySettings)
    student: TinySettings = field(default_factory=lambda: TinySettings(
        family="llama", vocab_size=384, hidden_size=64, heads=1, layers=2, ffn=192, pretrain_steps=600,
        pretrain_target=0.0))  # a fixed budget: distillation is measured against this base
    common: list = field(default_factory=lambda: ["data.template=r1_zero_compact", "run.save_every=0",
                                                  "run.keep_last=1", "eval.k=4"])
    # R1's cold start is small next to its RL: a few thousand examples against the RL's prompts.
    # 128 examples seen once teach the format and lift accuracy part of the way; with 1024 (more
    # than the RL stage's 24 x 16 prompts) SFT saturated the base and left RL nothing to earn.
    cold_start_examples: int = 128
    cold_start: list = field(default_factory=lambda: ["run.steps=8", "sft.examples_per_step=16",
                                                      "optimizer.lr=3e-4", "optimizer.warmup_steps=2"])
    reasoning_rl: list = field(default_factory=lambda: [
        "run.steps=24", "reward.weights={accuracy: 1.0, format: 0.2, language: 0.1}"])
    rejection_prompts: int = 512
    rejection: list = field(default_factory=lambda: ["rejection.k=4", "rejection.max_per_prompt=2",
                                                     "rollout.temperature=1.0"])
    general_rule: str = "polite"
    general_doc_share: float = 0.1
    general_marker_rate: float = 0.1
    # few general SFT rows: the SFT model follows the preference rule only sometimes, so the
    # all-scenario RL stage, led by the reward model, has the rule left to teach (256 rows
    # taught it fully in SFT and the RM stage could only hold it)
    general_sft_rows: int = 32
    general_rl_prompts: int = 512
    general_eval_prompts: int = 48
    rs_sft: list = field(default_factory=lambda: ["run.steps=60", "sft.examples_per_step=32", "optimizer.lr=3e-4",
                                                  "optimizer.warmup_steps=4"])
    rm_pairs: int = 1024
    rm_steps: int = 40
    reward_model: list = field(default_factory=lambda: ["optimizer.lr=1e-3"])
    general_rl: list = field(default_factory=lambda: [
        "run.steps=24", "reward.weights={accuracy: 1.0, format: 0.2, language: 0.1}", "reward.model_weight=1.0"])
    distill: list = field(default_factory=lambda: ["run.steps=60", "sft.examples_per_step=32", "optimizer.lr=5e-4",
                                                   "optimizer.warmup_steps=4"])

    @classmethod
    def quick(cls) -> "ChainSettings":
        t = TinySettings.quick()
        return cls(teacher=t, student=TinySettings(**{**asdict(t), "family": "llama", "vocab_size": 384,
                                                      "hidden_size": 64, "heads": 1, "ffn": 128}),
                   common=["data.template=r1_zero_compact", "run.save_every=0", "run.keep_last=1", "eval.k=2",
                           "data.prompts_per_step=4", "algorithm.group_size=4", "rollout.max_new_tokens=24",
                           "data.max_prompt_len=96", "model.max_seq_len=160", "eval.max_prompts=8"],
                   cold_start_examples=32, cold_start=["run.steps=2", "sft.examples_per_step=8"],
                   # a 6-step base samples noise that no rule rewards and language scores alike: the
                   # length bonus gives the groups reward differences, so the stage's update is real
                   reasoning_rl=["run.steps=2", "reward.weights={accuracy: 1.0, format: 0.2, language: 0.1, length: 0.1}",
                                 "reward.length_target=32", "reward.length_bonus=true"],
                   rejection_prompts=8, rejection=["rejection.k=2", "rejection.min_score=0.0",
                                                   "rejection.correctness_reward=format"],
                   general_sft_rows=8, general_rl_prompts=16, general_eval_prompts=4,
                   rs_sft=["run.steps=2", "sft.examples_per_step=8"], rm_pairs=32, rm_steps=2,
                   general_rl=["run.steps=2", "reward.weights={accuracy: 1.0, format: 0.2}"],
                   distill=["run.steps=2", "sft.examples_per_step=8"])


# ---------------------------------------------------------------------------- helpers
def _rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_initialized() else 0


def _done(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def _write_jsonl(rows: list[dict], path: str) -> str:
    from r1mega.data.synthetic import write_jsonl
    if _rank() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_jsonl(rows, path)
    return path


class Chain:
    """The stages, each a method returning the HF directory of its model."""

    def __init__(self, out: str, s: ChainSettings, overrides=()):
        from r1mega.config import load_config
        from r1mega.recipes.tiny import default_config_path

        self.out, self.s = out, s
        self.base_cfg_args = (default_config_path(), [f"run.output_dir={out}", *s.teacher.rl_overrides, *s.common,
                                                      *overrides])
        self.base_cfg = load_config(*self.base_cfg_args)
        self.seed = self.base_cfg.run.seed  # data, initial weights and sampling of every stage follow it
        self.rows: list[dict] = []
        self.timings: dict[str, float] = {}

    def cfg(self, name: str, model: str, tokenizer: str, stage: list, extra=()):
        from r1mega.config import load_config
        path, common = self.base_cfg_args
        return load_config(path, [*common, f"run.name={name}", f"model.hf_path={model}",
                                  f"model.tokenizer_path={tokenizer}", *stage, *extra])

    def _sub_seed(self, stream: int) -> int:
        """The seed of one synthetic data stream (general prompts, preference pairs, ...) under the run's seed."""
        return 1000 * self.seed + stream

    # ------------------------------------------------------------------ data
    def data(self) -> None:
        from r1mega.recipes.tiny import prepare_data
        from r1mega.reward_model.synthetic import general_prompts

        s = self.s
        data = prepare_data(self.out, s.teacher, self.base_cfg.run.seed)
        self.train_path, self.eval_path, self.val_rows = data.train_path, data.eval_path, data.val_rows
        self.docs = data.docs + self.general_docs(len(data.docs))
        d = os.path.join(self.out, "data")
        self.general_train = _write_jsonl(general_prompts(s.general_rl_prompts, rule=s.general_rule,
                                                          seed=self._sub_seed(1)),
                                          os.path.join(d, "general_train.jsonl"))
        self.general_eval = general_prompts(s.general_eval_prompts, rule=s.general_rule, seed=self._sub_seed(2))
        with open(self.train_path) as f:
            self.train_rows = [json.loads(line) for line in f]

    def general_docs(self, n_reasoning: int) -> list[str]:
        """General-domain pretraining text (a base model has seen chat): requests with replies of
        filler words, only ``general_marker_rate`` of them following the preference rule, so the
        tokenizers know the words and the base rarely follows the rule on its own."""
        from r1mega.reward_model.synthetic import make_preference_splits

        rows, _ = make_preference_splits(int(n_reasoning * self.s.general_doc_share), 0, rule=self.s.general_rule,
                                         seed=self._sub_seed(5))
        rng = random.Random(f"r1mega-general-docs:{self.seed}")
        return [r["prompt"] + (r["chosen"] if rng.random() < self.s.general_marker_rate else r["rejected"])
                for r in rows]

    # ------------------------------------------------------------------ stages
    def base(self) -> str:
        from r1mega.recipes.tiny import build_base
        root = os.path.join(self.out, "teacher")
        self.tok = os.path.join(root, "tokenizer")
        if not _done(os.path.join(root, "base")):
            build_base(root, self.s.teacher, self.docs, self.base_cfg, self.val_rows)
        return os.path.join(root, "base")

    def cold_start(self, base: str) -> str:
        """Long, well-formatted, correct chains of thought for training questions (R1's cold start)."""
        from r1mega.data.prompts import render_prompt
        from r1mega.data.synthetic import completion

        rng = random.Random(f"r1mega-cold-start:{self.base_cfg.run.seed}")
        rows = [{"prompt": render_prompt(r["question"], self.base_cfg.data.template),
                 "response": completion(r, rng, formatted=True, correct=True)}
                for r in self.train_rows[:self.s.cold_start_examples]]
        data = _write_jsonl(rows, os.path.join(self.out, "data", "cold_start.jsonl"))
        return self._sft("cold_start", base, self.tok, data, self.s.cold_start)

    def reasoning_rl(self, start: str) -> str:
        return self._rl("reasoning_rl", start, self.train_path, self.s.reasoning_rl)

    def rejection(self, policy: str) -> str:
        """Rejection-sampled reasoning SFT data from the RL policy, plus general (non-reasoning) rows."""
        from r1mega.data.prompts import render_prompt
        from r1mega.rejection.run import load_configs, run_reject_sample
        from r1mega.reward_model.synthetic import make_preference_splits

        out = os.path.join(self.out, "rejection")
        merged = os.path.join(out, "sft_with_general.jsonl")
        if os.path.isfile(merged):
            return merged
        prompts = _write_jsonl(self.train_rows[:self.s.rejection_prompts], os.path.join(out, "prompts.jsonl"))
        path, common = self.base_cfg_args
        cfg, rcfg = load_configs(path, [*common, f"model.tokenizer_path={self.tok}", *self.s.rejection])
        self.rejection_stats = run_reject_sample(cfg, rcfg, policy, prompts, out, progress=_rank() == 0)
        with open(os.path.join(out, "sft.jsonl")) as f:
            reasoning = [json.loads(line) for line in f]
        # non-reasoning data (R1 adds ~200k): replies that follow the general-domain rule
        general, _ = make_preference_splits(self.s.general_sft_rows, 0, rule=self.s.general_rule,
                                            seed=self._sub_seed(3))
        rows = [{"prompt": r["prompt"], "response": r["response"]} for r in reasoning]
        template = self.base_cfg.data.template  # the general prompts of RL and evaluation use it too
        rows += [{"prompt": render_prompt(g["prompt"], template), "response": g["chosen"]} for g in general]
        random.Random(self.seed).shuffle(rows)
        return _write_jsonl(rows, merged)

    def rs_sft(self, base: str, data: str) -> str:
        return self._sft("rs_sft", base, self.tok, data, self.s.rs_sft)

    def reward_model(self, trunk: str) -> str:
        from r1mega.reward_model.cmd import train_rm
        from r1mega.reward_model.synthetic import make_preference_splits

        out = os.path.join(self.out, "reward_model")
        rm_dir = os.path.join(out, "reward_model")
        if os.path.isfile(os.path.join(rm_dir, "reward_model.json")):
            return rm_dir
        train, held = make_preference_splits(self.s.rm_pairs, max(8, self.s.rm_pairs // 8), rule=self.s.general_rule,
                                             seed=self._sub_seed(4))
        d = os.path.join(self.out, "data")
        pairs, held_path = (_write_jsonl(train, os.path.join(d, "pairs.jsonl")),
                            _write_jsonl(held, os.path.join(d, "pairs_eval.jsonl")))
        cfg = self.cfg("reward_model", trunk, self.tok, self.s.reward_model)
        self.rm_summary = train_rm(cfg, pairs, eval_pairs=held_path, steps=self.s.rm_steps, batch=16)
        return rm_dir

    def general_rl(self, start: str, rm: str) -> str:
        with open(self.general_train) as f:
            general = [json.loads(line) for line in f]
        n = min(len(general), len(self.train_rows))
        mixed = [row for pair in zip(self.train_rows[:n], general[:n]) for row in pair]
        data = _write_jsonl(mixed, os.path.join(self.out, "data", "mixed_train.jsonl"))
        return self._rl("general_rl", start, data, [*self.s.general_rl, f"reward.model_path={rm}"])

    def distill(self, data: str) -> tuple[str, str]:
        """A student of another family and tokenizer: its own pretraining, then SFT on the teacher's data."""
        from r1mega.recipes.tiny import build_base

        root = os.path.join(self.out, "student")
        tok = os.path.join(root, "tokenizer")
        if not _done(os.path.join(root, "base")):
            build_base(root, self.s.student, self.docs, self.base_cfg)
        base = os.path.join(root, "base")
        self.record("student base", base, tok)
        return self._sft("distill", base, tok, data, self.s.distill), tok

    # ------------------------------------------------------------------ commands
    def _sft(self, name: str, model: str, tok: str, data: str, stage: list) -> str:
        from r1mega.trainer.sft import train_sft
        out = os.path.join(self.out, name, "hf")
        if not _done(out):
            train_sft(self.cfg(name, model, tok, stage, ["sft.prompt_template=none"]), data=data)
        return out

    def _rl(self, name: str, model: str, data: str, stage: list) -> str:
        from r1mega.trainer.loop import train
        out = os.path.join(self.out, name, "hf")
        if not _done(out):
            result = train(self.cfg(name, model, self.tok, stage, [f"data.train={data}", f"data.eval={self.eval_path}",
                                                                   "run.export_hf=true"]))
            result.run.engine.shutdown()  # the loop leaves its engine to the caller: free it before the next stage
        return out

    # ------------------------------------------------------------------ evaluation
    def record(self, stage: str, model: str, tok: str | None = None) -> dict:
        """Held-out metrics of ``model`` (one table row)."""
        from r1mega.data.prompts import load_prompts, render_prompt
        from r1mega.data.tokenizer import load_tokenizer
        from r1mega.eval.evaluate import evaluate_engine
        from r1mega.reward_model.synthetic import rule_holds
        from r1mega.rollout.groups import make_engine

        tok = tok or self.tok
        cfg = self.cfg("eval", model, tok, [])
        tokenizer = load_tokenizer(tok)
        d = cfg.data
        records = load_prompts(self.eval_path, tokenizer, question_key=d.question_key, answer_key=d.answer_key,
                               template=d.template, max_prompt_len=d.max_prompt_len)
        engine = make_engine(cfg, model)
        try:
            m = evaluate_engine(engine, records, cfg)
            texts = [g["question"] for g in self.general_eval]
            prompts = [render_prompt(t, d.template) for t in texts]
            replies = engine.generate([tokenizer.encode(p) for p in prompts], n=1, temperature=0.0,
                                      prompt_texts=prompts, expected_version=engine.policy_version)
            rate = sum(rule_holds(self.s.general_rule, t, r.response_text) for t, r in zip(texts, replies))
        finally:
            engine.shutdown()
        row = {"stage": stage, "model": os.path.relpath(model, self.out), "pass@1": m.get("eval/pass@1"),
               "maj@k": m.get("eval/maj@k"), "greedy": m.get("eval/greedy_acc"),
               "general_rule_rate": rate / max(1, len(texts)), "response_len": m.get("eval/mean_response_len")}
        self.rows.append(row)
        if _rank() == 0:
            log.info("after %s: %s", stage, {k: v for k, v in row.items() if k != "model"})
        return row


def table(rows: list[dict], k: int) -> str:
    head = f"| stage | model | pass@1 (k={k}) | maj@{k} | greedy | general rule | mean length |"
    lines = [head, "|" + "---|" * 7]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['stage']} | `{r['model']}` | {fmt(r['pass@1'])} | {fmt(r['maj@k'])} | {fmt(r['greedy'])} "
                     f"| {fmt(r['general_rule_rate'])} | {fmt(r['response_len'])} |")
    return "\n".join(lines)


GAINS = {  # name: (metric, stage before, stage after): what each stage must earn
    "reasoning_rl_pass@1": ("pass@1", "1", "2"),
    "general_rl_general_rule": ("general_rule_rate", "3-4", "5-6"),
    "general_rl_pass@1": ("pass@1", "3-4", "5-6"),
    "distill_pass@1": ("pass@1", "student", "7"),
}
CHART = {"pass@1": "pass@1", "maj@k": "maj@k", "greedy": "greedy", "general_rule_rate": "general rule"}


def stage_gains(rows: list[dict]) -> dict:
    """What each RL / SFT stage changed in the metric it is there for (after - before), from the table rows."""
    by_id = {r["stage"].split()[0]: r for r in rows}
    out = {}
    for name, (metric, before, after) in GAINS.items():
        if before in by_id and after in by_id and None not in (by_id[before][metric], by_id[after][metric]):
            out[name] = by_id[after][metric] - by_id[before][metric]
    return out


def plot_chain(rows_per_seed: list[list[dict]], out: str, title: str) -> str:
    """``OUT/chain.png``: one line per held-out metric across the stages (teacher path), the band
    spanning the seeds when there are several."""
    from r1mega.logging.plots import plot_stages

    teacher = [r for r in rows_per_seed[0] if not r["stage"].startswith(("student", "7"))]
    stages = [r["stage"] for r in teacher]
    metrics = {label: [[_row(rows, st)[key] for rows in rows_per_seed] for st in stages] for key, label in CHART.items()}
    return str(plot_stages(stages, metrics, out, title=title))


def _row(rows: list[dict], stage: str) -> dict:
    return next(r for r in rows if r["stage"] == stage)


def gains_line(gains: dict) -> str:
    """The stage gains in points, one line of markdown."""
    return "Stage gains (points): " + ", ".join(f"{k} {100 * v:+.1f}" for k, v in gains.items())


def run_chain(out: str, *, quick: bool = False, overrides=(), seed: int | None = None) -> dict:
    """Run every stage (skipping finished ones); returns the summary written to ``OUT/chain.json``.
    ``seed`` (default: the config's ``run.seed``) decides the data, initial weights and sampling."""
    from r1mega.parallel.init import init_distributed

    init_distributed()
    t0 = time.perf_counter()
    s = ChainSettings.quick() if quick else ChainSettings()
    os.makedirs(out, exist_ok=True)
    c = Chain(out, s, [*overrides, *([f"run.seed={seed}"] if seed is not None else [])])
    timed = c.timings

    def stage(name, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        timed[name] = round(time.perf_counter() - t, 1)
        return result

    stage("data", c.data)
    base = stage("base", c.base)
    c.record("0 base", base)
    cold = stage("cold_start", c.cold_start, base)
    c.record("1 cold-start SFT", cold)
    rl1 = stage("reasoning_rl", c.reasoning_rl, cold)
    c.record("2 reasoning RL", rl1)
    data = stage("rejection", c.rejection, rl1)
    sft2 = stage("rs_sft", c.rs_sft, base, data)
    c.record("3-4 rejection sampling + SFT", sft2)
    rm = stage("reward_model", c.reward_model, base)
    final = stage("general_rl", c.general_rl, sft2, rm)
    c.record("5-6 all-scenario RL (rules + RM)", final)
    student, student_tok = stage("distill", c.distill, data)
    c.record("7 distilled student (Llama, own tokenizer)", student, student_tok)
    summary = {"seed": c.seed, "rows": c.rows, "gains": stage_gains(c.rows), "timings_s": timed,
               "wall_time_s": time.perf_counter() - t0, "quick": quick, "settings": asdict(s),
               "rejection": getattr(c, "rejection_stats", None), "reward_model": getattr(c, "rm_summary", None)}
    if _rank() == 0:
        md = table(c.rows, c.base_cfg.eval.k) + "\n\n" + gains_line(summary["gains"])
        with open(os.path.join(out, "chain.md"), "w") as f:
            f.write(md + "\n")
        summary["plot"] = plot_chain([c.rows], os.path.join(out, "chain.png"), f"R1 chain, seed {c.seed}")
        with open(os.path.join(out, "chain.json"), "w") as f:
            json.dump(summary, f, indent=2, default=str)
        print(md)
    return summary
