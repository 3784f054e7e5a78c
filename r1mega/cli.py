"""``r1mega``: the command line.

    r1mega tiny [--out DIR] [--seed S | --seeds N] [--quick]
                                                      the embedded tiny default (R1-Zero on CPU), over seeds
    r1mega r1-chain [--out DIR] [--seed S | --seeds N] [--quick]
                                                      the whole R1 pipeline on the tiny default (CPU), over seeds
    r1mega train CONFIG [key=value ...]               GRPO training (torchrun for several processes)
    r1mega sft CONFIG [--data FILE] [key=value ...]   supervised fine-tuning (prompt/response or messages)
    r1mega eval --model DIR --data [NAME=]FILE ... [--format F] [--out JSON] [key=value ...]
                                                      DeepSeek-R1 protocol per benchmark: pass@1, cons@k, pass@k
    r1mega generate --model DIR --prompts FILE --out FILE [...]
    r1mega reject-sample --model DIR --prompts FILE --out DIR [-k N] [CONFIG] [key=value ...]
                                                      rejection sampling -> SFT jsonl + drop statistics
    r1mega train-rm CONFIG --pairs FILE [--eval-pairs FILE] [--steps N] [--batch N] [key=value ...]
                                                      Bradley-Terry reward model on preference pairs
    r1mega convert hf-to-r1mega|r1mega-to-hf|reshard SRC DST [--tp N --pp N --ep N]
    r1mega config [CONFIG] [key=value ...] [--schema] resolved config, or every documented field
    r1mega plan CONFIG [key=value ...] [--nodes N] [--gpu-mem-gb G] [--hf-config F] [--json]
    r1mega sandbox [--time-limit S] [--memory-mb MB] [--file SRC[:NAME]] [--json] -- CMD [ARGS...]
                                                      run untrusted code isolated (r1mega/sandbox)
                                                      per-GPU memory estimate and layout check before launch

Multi-process: ``torchrun --nproc-per-node N -m r1mega.cli train CONFIG ...`` (or the
``r1mega`` script path in place of ``-m r1mega.cli``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys


def cmd_tiny(args) -> int:
    if args.seeds:
        from r1mega.recipes.seeds import run_seeds

        first = args.seed if args.seed is not None else 0
        result = run_seeds(args.out, list(range(first, first + args.seeds)), quick=args.quick, config=args.config,
                           overrides=args.overrides)
        g = result["gain"].get("pass@1")
        print(json.dumps({"seeds": result["seeds"], "gain pass@1 (points)": {k: round(100 * v, 1) for k, v in g.items()}
                          if g else None, "table": os.path.join(args.out, "seeds.md")}, indent=2))
        return 0
    from r1mega.recipes.tiny import run_tiny

    summary = run_tiny(args.out, quick=args.quick, config_path=args.config, overrides=args.overrides, seed=args.seed,
                       preset=args.preset)
    if int(os.environ.get("RANK", "0")) == 0:
        b, a = summary["before"], summary["after"]
        print(json.dumps({"seed": summary["seed"], "pass@1 before": b.get("eval/pass@1"),
                          "pass@1 after": a.get("eval/pass@1"), "maj@k before": b.get("eval/maj@k"),
                          "maj@k after": a.get("eval/maj@k"), "wall_time_s": round(summary["wall_time_s"], 1),
                          "summary": os.path.join(args.out, "summary.json")}, indent=2))
    return 0


def cmd_r1_chain(args) -> int:
    from r1mega.recipes.r1_chain import run_chain

    if args.seeds:
        from r1mega.recipes.chain_seeds import run_chain_seeds

        first = args.seed if args.seed is not None else 0
        result = run_chain_seeds(args.out, list(range(first, first + args.seeds)), quick=args.quick,
                                 overrides=args.overrides)
        print(json.dumps({"seeds": result["seeds"], "gains (points)": {
            k: [round(100 * v, 1) for v in g["per_seed"]] for k, g in result["gains"].items()},
            "table": os.path.join(args.out, "chain_seeds.md")}, indent=2))
        return 0
    summary = run_chain(args.out, quick=args.quick, overrides=args.overrides, seed=args.seed)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"stage table: {os.path.join(args.out, 'chain.md')} ({summary['wall_time_s']:.0f} s)")
    return 0


def cmd_train(args) -> int:
    from r1mega.config import load_config
    from r1mega.trainer.loop import train

    cfg = load_config(args.config, args.overrides)
    train(cfg)
    return 0


def cmd_sft(args) -> int:
    from r1mega.config import load_config
    from r1mega.trainer.sft import train_sft

    cfg = load_config(args.config, args.overrides)
    out = train_sft(cfg, data=args.data)
    if int(os.environ.get("RANK", "0")) == 0:
        keys = ("sft/loss", "sft/eval_loss", "hf_dir", "data")
        print(json.dumps({k: out[k] for k in keys if k in out}, indent=2, default=str))
    return 0


def _benchmarks(specs: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--data`` entries, ``path`` or ``name=path``, as {name: path} (name: the file's stem), and the
    config overrides (``section.key=value``) that followed them on the command line."""
    from r1mega.config import ConfigError
    from r1mega.data.benchmarks import benchmark_name

    out: dict[str, str] = {}
    overrides = [s for s in specs if re.match(r"^[A-Za-z_]+\.[A-Za-z_.]+=", s)]
    for spec in (s for s in specs if s not in overrides):
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, benchmark_name(spec)
        if name in out:
            raise ConfigError(f"--data: two benchmarks named {name!r}; name them with name=path")
        out[name] = path
    if not out:
        raise ConfigError("--data: no benchmark file given")
    return out, overrides


def cmd_eval(args) -> int:
    from r1mega.config import load_config
    from r1mega.data.prompts import load_prompts
    from r1mega.data.tokenizer import load_tokenizer
    from r1mega.eval.evaluate import evaluate_engine
    from r1mega.eval.report import as_json, format_table, scoring_warning
    from r1mega.parallel.init import init_distributed
    from r1mega.rollout.groups import make_engine

    benchmarks, overrides = _benchmarks(args.data)
    if args.format:
        overrides.append(f"data.format={args.format}")
    cfg = load_config(args.config, list(args.overrides or []) + overrides)
    init_distributed(cfg.run)
    tok = load_tokenizer(cfg.model.tokenizer_path or args.model)
    d = cfg.data
    records = {name: load_prompts(path, tok, split=d.split, question_key=d.question_key, answer_key=d.answer_key,
                                  template=d.template, max_prompt_len=d.max_prompt_len, format=d.format, name=name)
               for name, path in benchmarks.items()}  # every file is read before the engine starts
    engine = make_engine(cfg, args.model)
    per = {name: evaluate_engine(engine, recs, cfg, prefix="") for name, recs in records.items()}
    if int(os.environ.get("RANK", "0")) == 0:
        e = cfg.eval
        print(f"r1mega eval: {args.model}, k={e.k} samples per problem at temperature {e.temperature}, top-p "
              f"{e.top_p}; cons@k = majority vote over answers grouped by the verifier's equivalence")
        print(format_table(per))
        warning = scoring_warning(per)
        if warning:
            print(warning, file=sys.stderr)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"model": args.model, "k": e.k, "temperature": e.temperature, "top_p": e.top_p,
                           **as_json(per)}, f, indent=2)
                f.write("\n")
    return 0


def cmd_generate(args) -> int:
    from r1mega.checkpoint.convert import hf_model_dir
    from r1mega.config import load_config
    from r1mega.parallel.init import init_distributed
    from r1mega.rollout.generate_cmd import run_generate

    cfg = load_config(args.config, args.overrides)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.path.isfile(os.path.join(args.model, "meta.json")):
        init_distributed(cfg.run)
    model = hf_model_dir(args.model, cfg)
    extra = {"tokenizer": cfg.model.tokenizer_path} if cfg.model.tokenizer_path else {}
    stats = run_generate(model, args.prompts, args.out, cfg.rollout, n=args.n, prompt_key=args.prompt_key,
                         rollout_tensor=cfg.parallel.rollout_tensor, dtype=cfg.model.dtype, **extra)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(stats, indent=2, default=str))
    return 0


def cmd_convert(args) -> int:
    from r1mega.checkpoint.convert import hf_to_r1mega, r1mega_to_hf, reshard
    from r1mega.config.sections import ParallelConfig

    # sequence parallelism changes no weight, and MoE layers need it with TP > 1
    parallel = ParallelConfig(tensor=args.tp, pipeline=args.pp, expert=args.ep, expert_tensor=args.etp,
                              sequence_parallel=args.tp > 1, first_stage_layers=args.first_stage_layers,
                              last_stage_layers=args.last_stage_layers)
    run = {"hf-to-r1mega": hf_to_r1mega, "r1mega-to-hf": r1mega_to_hf, "reshard": reshard}[args.direction]
    run(args.src, args.dst, parallel)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"converted {args.src} -> {args.dst}")
    return 0


def cmd_config(args) -> int:
    import yaml

    from r1mega.config import Config, describe, load_config, to_dict

    if args.schema:
        for key, tp, default, help_ in describe(Config):
            if tp == "section":
                print(f"\n{key}:  {help_}")
            else:
                print(f"  {key} ({tp}, default {default}): {help_}")
        return 0
    config, overrides = args.config, list(args.overrides)
    cfg = load_config(config, overrides)
    print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from r1mega.recipes.tiny import PRESETS as TINY_PRESETS  # a plain module: no torch, vllm or megatron

    p = argparse.ArgumentParser(prog="r1mega", description="DeepSeek-R1-style RL for reasoning LLMs on Megatron-Core")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tiny", help="the embedded tiny default: tokenizer, base model, eval, GRPO, eval (CPU)")
    t.add_argument("--out", default="runs/tiny", help="output directory (default runs/tiny)")
    t.add_argument("--quick", action="store_true", help="the shortened version (seconds; used by the tests)")
    t.add_argument("--config", default=None, help="RL config (default: the embedded tiny_cpu.yaml)")
    t.add_argument("--preset", default=None,
                   choices=TINY_PRESETS,
                   help="sizes: default, quick (= --quick), learning_check (the ~1-minute learning test), "
                        "code_check (R1-Zero on Python programs scored in the sandbox, shortened), longtail "
                        "(a base whose response lengths have a long tail: tools/bench_partial.py) or "
                        "longtail_skilled (the same tail on a base that can add)")
    t.add_argument("--seed", type=int, default=None,
                   help="seed of the data, the initial weights and all sampling (default: run.seed of the config)")
    t.add_argument("--seeds", type=int, default=0, metavar="N",
                   help="run N seeds (from --seed, default 0), each in OUT/seed_S, and write the spread of every "
                        "held-out metric with the machine to OUT/seeds.md, OUT/seeds.json and OUT/eval.png")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides of the RL config")
    t.set_defaults(fn=cmd_tiny)

    t = sub.add_parser("r1-chain", help="the whole R1 pipeline on the tiny default: cold-start SFT, reasoning RL, "
                                        "rejection sampling + SFT, reward-model RL, distillation (CPU)")
    t.add_argument("--out", default="runs/r1_chain", help="output directory (a finished stage is not re-run)")
    t.add_argument("--quick", action="store_true", help="the shortened configuration (minutes; used by the tests)")
    t.add_argument("--seed", type=int, default=None,
                   help="seed of the data, initial weights and sampling of every stage (default: run.seed)")
    t.add_argument("--seeds", type=int, default=0, metavar="N",
                   help="run N seeds (from --seed, default 0), each in OUT/seed_S, and write each stage's gain per "
                        "seed with the machine to OUT/chain_seeds.md, OUT/chain_seeds.json and OUT/chain.png")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every stage")
    t.set_defaults(fn=cmd_r1_chain)

    t = sub.add_parser("train", help="GRPO / R1-Zero training")
    t.add_argument("config", help="YAML config (or, with no file, the first key.sub=value override)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    t.set_defaults(fn=cmd_train)

    t = sub.add_parser("sft", help="supervised fine-tuning (prompt/response or chat messages; sft.* options)")
    t.add_argument("config", help="YAML config (model, parallel, optimizer, trainer, sft, run sections; or, "
                                  "with no file, the first key.sub=value override)")
    t.add_argument("--data", default=None, help="training examples (default: sft.train of the config)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    t.set_defaults(fn=cmd_sft)

    t = sub.add_parser("eval", help="DeepSeek-R1 evaluation: pass@1 over k samples, cons@k, pass@k, per benchmark")
    t.add_argument("--model", required=True, help="HF model directory (e.g. a run's hf/ export)")
    t.add_argument("--data", required=True, nargs="+", action="extend", metavar="[NAME=]PATH",
                   help="one or more benchmarks (.jsonl, .parquet, a datasets save_to_disk directory or a hub "
                        "name; repeatable), each a row of the table; NAME defaults to the file's stem")
    t.add_argument("--format", default=None, metavar="F",
                   help="row layout of every --data file (data.format): auto (default: detected per file from "
                        "its first row), generic (data.question_key/answer_key), gsm8k, math, aime, amc or code")
    t.add_argument("--config", default=None, help="YAML config for eval/rollout/data/reward settings")
    t.add_argument("--out", default=None, help="write the metrics JSON (per benchmark and pooled) here")
    t.add_argument("overrides", nargs="*")
    t.set_defaults(fn=cmd_eval)

    t = sub.add_parser("generate", help="sample responses for a jsonl of prompts")
    t.add_argument("--model", required=True, help="HF model directory, or an r1mega checkpoint")
    t.add_argument("--prompts", required=True, help="jsonl with a prompt field")
    t.add_argument("--out", required=True, help="output jsonl")
    t.add_argument("--n", type=int, default=1, help="samples per prompt")
    t.add_argument("--prompt-key", default="prompt")
    t.add_argument("--config", default=None)
    t.add_argument("overrides", nargs="*")
    t.set_defaults(fn=cmd_generate)

    t = sub.add_parser("convert", help="checkpoint conversion: HF <-> r1mega, and r1mega at another TP/PP/EP "
                                       "layout (reshard); run under torchrun with tp x pp processes")
    t.add_argument("direction", choices=["hf-to-r1mega", "r1mega-to-hf", "reshard"])
    t.add_argument("src")
    t.add_argument("dst")
    t.add_argument("--tp", type=int, default=1, help="tensor-parallel size to run the conversion at")
    t.add_argument("--pp", type=int, default=1, help="pipeline-parallel size to run the conversion at")
    t.add_argument("--ep", type=int, default=1, help="expert-parallel size (MoE) to run the conversion at")
    t.add_argument("--etp", type=int, default=None, help="expert tensor-parallel size (MoE; default: --tp)")
    t.add_argument("--first-stage-layers", type=int, default=None,
                   help="layers on the first pipeline stage when they do not split evenly (default: even)")
    t.add_argument("--last-stage-layers", type=int, default=None,
                   help="layers on the last pipeline stage when they do not split evenly (default: even)")
    t.set_defaults(fn=cmd_convert)

    t = sub.add_parser("config", help="print the resolved config, or the documented schema")
    t.add_argument("config", nargs="?", default=None)
    t.add_argument("overrides", nargs="*")
    t.add_argument("--schema", action="store_true", help="list every field with its type, default and help")
    t.set_defaults(fn=cmd_config)
    from r1mega.plan.cli import add_parser as add_plan
    from r1mega.rejection.cli import add_parser as add_reject_sample
    from r1mega.reward_model.cmd import add_parser as add_train_rm
    from r1mega.sandbox.cli import add_parser as add_sandbox
    add_plan(sub)
    add_reject_sample(sub)
    add_train_rm(sub)
    add_sandbox(sub)
    return p


def _close_process_groups() -> None:
    """Tear the process groups down before the interpreter does. Left to interpreter exit, gloo's
    threads may be destroyed still joinable ("terminate called without an active exception"): the
    rank dies of SIGABRT instead of returning its exit code. Only on clean returns (finished, or bad
    input found by every rank alike), when no collective of this rank is in flight."""
    if "vllm" in sys.modules:  # an in-process engine tears its groups (and the default one) down at exit itself
        return
    if "torch.distributed" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            from r1mega.parallel.init import destroy_parallel
            try:
                destroy_parallel()
            except (RuntimeError, ValueError) as e:  # best effort: the exit code stays the command's
                logging.getLogger("r1mega").debug("process-group teardown: %s", e)


def main(argv: list[str] | None = None) -> int:
    from r1mega.config import ConfigError
    from r1mega.data.prompts import DataError
    from r1mega.logging.console import setup_logging

    setup_logging()
    parser = build_parser()
    # key=value overrides may follow options too (argparse stops collecting positionals at the first option)
    args, extra = parser.parse_known_args(argv)
    if extra:
        bad = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
        if bad:
            parser.error(f"unrecognized arguments: {' '.join(bad)}")
        args.overrides = list(args.overrides or []) + extra
    try:
        code = args.fn(args)
    except ConfigError as e:
        print(f"r1mega {args.command}: config error: {e}", file=sys.stderr)
        code = 2
    except DataError as e:
        print(f"r1mega {args.command}: data error: {e}", file=sys.stderr)
        code = 2
    except RuntimeError as e:
        from r1mega.parallel import watchdog
        rank = int(os.environ.get("RANK", "0"))
        hung = watchdog.abort_message()
        if hung is not None:  # a peer stopped the job (this rank's collective broke as it exited)
            print(f"[r1mega rank{rank}] HUNG RANK: {hung}", file=sys.stderr)
        elif watchdog.is_collective_timeout(e):
            print(f"r1mega {args.command}: " + watchdog.explain_timeout(e, rank), file=sys.stderr)
        else:
            raise
        return watchdog.HUNG_EXIT_CODE
    _close_process_groups()
    return code


if __name__ == "__main__":
    sys.exit(main())
