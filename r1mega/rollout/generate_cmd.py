"""Core of ``r1mega generate``: sample responses for a jsonl of prompts with vLLM.

Input: one JSON object per line with the prompt text under ``prompt_key``. Output: one JSON
object per input line, in input order, with the input's other fields kept and::

    prompt, responses[n], prompt_tokens, response_tokens[n], finish_reasons[n], logprob_sums[n]

``logprob_sums`` are sums of the engine's processed logprobs (at the sampling temperature).
Prompts are tokenized with the model directory's tokenizer (no chat template; template the
prompt text beforehand). Under torchrun, rollout-DP rank ``d`` samples lines ``d, d + D, ...``
with seed ``rollout.seed + d``; DP rank 0 gathers and writes the file.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from tqdm import tqdm

from r1mega.config.sections import RolloutConfig


def _read_prompts(path: str, prompt_key: str) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get(prompt_key), str):
                raise ValueError(f"{path}:{lineno}: expected an object with a string "
                                 f"{prompt_key!r} field, got {line.strip()[:80]!r}")
            rows.append(row)
    return rows


def run_generate(model_path: str, prompts_jsonl: str, out_jsonl: str, cfg: RolloutConfig,
                 n: int, prompt_key: str = "prompt", *, batch_size: int = 64,
                 rollout_tensor: int = 1, dtype: str = "float32", engine=None,
                 progress: bool = True, **engine_kwargs) -> dict[str, float]:
    """Sample ``n`` responses per prompt line and write ``out_jsonl``; returns summary stats.

    ``engine``: an existing :class:`~r1mega.rollout.engine.RolloutEngine` to reuse (tests);
    None builds one from ``model_path``. ``batch_size``: prompts per ``generate`` call (the
    progress bar advances per batch). A prompt too long for the engine is an error naming
    its line.
    """
    from r1mega.rollout.engine import RolloutEngine

    rows = _read_prompts(prompts_jsonl, prompt_key)
    if engine is None:
        engine = RolloutEngine(model_path, cfg, rollout_tensor=rollout_tensor, dtype=dtype, **engine_kwargs)
    if engine.tokenizer is None:
        raise ValueError("run_generate needs an engine with a tokenizer")
    mine = list(range(engine.dp_rank, len(rows), engine.dp_size))
    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(mine), desc="generate", unit="prompt",
               disable=not progress or engine.dp_rank != 0 or engine.tp_rank != 0)
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        ids = [engine.tokenizer(rows[i][prompt_key], add_special_tokens=False)["input_ids"]
               for i in idx]
        try:
            samples = engine.generate(ids, n=n)
        except ValueError as e:
            raise ValueError(f"{prompts_jsonl}: {e} (prompt k = line {idx[0] + 1} + k)") from e
        for k, i in enumerate(idx):
            group = samples[k * n:(k + 1) * n]
            results[i] = {
                **rows[i],
                "responses": [s.response_text for s in group],
                "prompt_tokens": len(group[0].prompt_ids),
                "response_tokens": [len(s.response_ids) for s in group],
                "finish_reasons": [s.finish_reason for s in group],
                "logprob_sums": [float(sum(s.rollout_logprobs)) for s in group],
            }
        bar.update(len(idx))
    bar.close()

    dist = torch.distributed
    if engine.dp_size > 1:
        gathered: list[dict | None] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, results if engine.tp_rank == 0 else {})
        results = {k: v for part in gathered for k, v in (part or {}).items()}
    if engine.dp_rank == 0 and engine.tp_rank == 0:
        os.makedirs(os.path.dirname(os.path.abspath(out_jsonl)), exist_ok=True)
        with open(out_jsonl, "w") as f:
            for i in range(len(rows)):
                f.write(json.dumps(results[i], ensure_ascii=False) + "\n")
    tokens = [t for r in results.values() for t in r["response_tokens"]]
    return {"prompts": float(len(rows)), "samples": float(len(tokens)),
            "mean_response_tokens": sum(tokens) / max(len(tokens), 1),
            "truncated_frac": sum(f == "length" for r in results.values()
                                  for f in r["finish_reasons"]) / max(len(tokens), 1)}
