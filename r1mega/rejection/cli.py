"""``r1mega reject-sample``: argument parsing and the command function (wired into r1mega/cli.py).

    r1mega reject-sample --model DIR --prompts SRC --out DIR [-k N] [CONFIG] [key=value ...]
    torchrun --nproc-per-node N -m r1mega.cli reject-sample ...     (N/rollout_tensor engines)
"""

from __future__ import annotations

import json
import os


def add_parser(sub) -> None:
    """Register ``reject-sample`` on the ``r1mega`` subparsers."""
    t = sub.add_parser("reject-sample", help="rejection sampling (R1 stage 3): k samples per prompt, keep "
                                             "correct readable ones -> SFT jsonl")
    t.add_argument("--model", required=True, help="HF model directory, or an r1mega checkpoint")
    t.add_argument("--prompts", required=True,
                   help="prompts: .jsonl/.json/.parquet or a `datasets` name (data.question_key/answer_key, "
                        "data.template, data.split)")
    t.add_argument("--out", required=True, help="output directory (sft.jsonl, dropped.jsonl, stats.json, ...)")
    t.add_argument("-k", type=int, default=None, help="samples per prompt (default rejection.k)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("config", nargs="?", default=None,
                   help="YAML config (model, parallel, rollout, reward, data and rejection sections)")
    t.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. rejection.min_language_share=0.9")
    t.set_defaults(fn=fn)


def fn(args) -> int:
    from r1mega.checkpoint.convert import hf_model_dir
    from r1mega.data.prompts import DataError
    from r1mega.parallel.init import init_distributed
    from r1mega.rejection.run import load_configs, run_reject_sample

    config, overrides = args.config, list(args.overrides)
    if args.k is not None:
        overrides.append(f"rejection.k={args.k}")
    cfg, rcfg = load_configs(config, overrides)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or os.path.isfile(os.path.join(args.model, "meta.json")):
        init_distributed(cfg.run)
    model = hf_model_dir(args.model, cfg)
    try:
        stats = run_reject_sample(cfg, rcfg, model, args.prompts, args.out, progress=not args.no_progress)
    except DataError as e:
        raise SystemExit(f"r1mega reject-sample: {e}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        keys = ("prompts", "responses", "correct", "kept", "dropped", "dropped_by_reason", "prompts_without_kept",
                "mean_kept_tokens", "seconds")
        print(json.dumps({key: stats[key] for key in keys} | {"out": args.out}, indent=2))
    return 0
