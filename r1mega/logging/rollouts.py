"""The samples each RL step trained on, as one JSON line per sample (``run.log_rollouts``):

    run_dir/rollouts/step_000012.jsonl

Fields: step, group (the group id within the step), prompt, response (texts), response_ids,
reward, reward_breakdown, advantage, finish_reason, answer, policy_version and, for a response
continued across weight updates, token_versions. What a person reads to see what the policy
does, and the record that shows which prompts a run trained on (a step re-run after a resume
rewrites its file). Written by rank 0, atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import json
import os

DIR = "rollouts"


def step_path(run_dir: str, step: int) -> str:
    return os.path.join(run_dir, DIR, f"step_{step:06d}.jsonl")


def write_rollouts(run_dir: str, step: int, samples: list) -> str:
    """Write ``samples`` (``r1mega.types.Sample``, after rewards and advantages; logging imports no
    other part of r1mega) as step ``step``'s file; returns its path."""
    path = step_path(run_dir, step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for s in samples:
            row = {"step": step, "group": s.group_id, "prompt": s.prompt_text, "response": s.response_text,
                   "response_ids": s.response_ids, "reward": s.reward, "reward_breakdown": s.reward_breakdown,
                   "advantage": s.advantage, "finish_reason": s.finish_reason, "answer": s.answer,
                   "policy_version": s.policy_version}
            if s.token_versions is not None:
                row["token_versions"] = s.token_versions
            f.write(json.dumps(row, default=float) + "\n")
    os.replace(tmp, path)
    return path


def read_rollouts(run_dir: str) -> dict[int, list[dict]]:
    """Every step's rows: {step: rows}."""
    root = os.path.join(run_dir, DIR)
    out = {}
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if name.startswith("step_") and name.endswith(".jsonl"):
            with open(os.path.join(root, name)) as f:
                out[int(name[5:-6])] = [json.loads(line) for line in f if line.strip()]
    return out
