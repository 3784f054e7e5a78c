"""What changed in the config since the checkpoint a run resumes from, and which changes cannot work.

    changes = resume_changes(saved_config_dict, to_dict(cfg))   # [(key, old, new), ...]
    check_resume(changes)                                       # ConfigError naming a refused key

Explicit changes at resume take effect (the optimizer's lr, schedule and clip come from the new
config; the scheduler keeps only its step count from the checkpoint) and each is logged as
``changed since the checkpoint: key old -> new``. Changes that would silently alter what the
run means are refused by name: the prompt order (the sampler's position is an index into the
shuffled dataset of the saved seed, file and batch size) and the tokenizer (token ids index the
checkpoint's embedding). The architecture is compared field by field when the weights load.
Pure Python.
"""

from __future__ import annotations

from typing import Any

from r1mega.config.base import ConfigError

# key -> why it cannot change at resume
REFUSED_AT_RESUME = {
    "run.seed": "it seeds the prompt order the saved sampler position indexes into",
    "data.train": "the saved sampler position indexes into the old dataset",
    "data.split": "the saved sampler position indexes into the old dataset",
    "data.shuffle": "the saved sampler position indexes into the old prompt order",
    "data.prompts_per_step": "the saved sampler position counts batches of the old size",
    "model.tokenizer_path": "token ids index the checkpoint's embedding rows",
}
# Keys that say where or whether to resume, not how to train: never reported.
_NOT_A_CHANGE = ("run.resume",)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def resume_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """``(key, old, new)`` for every dotted key whose value differs between the checkpoint's
    config and this run's (a key only one side has counts, its other value None), sorted."""
    a, b = _flatten(saved), _flatten(current)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in _NOT_A_CHANGE]


def check_resume(changes: list[tuple[str, Any, Any]], checkpoint: str) -> None:
    """ConfigError listing every refused change, each with its reason and how to proceed."""
    bad = [(k, old, new) for k, old, new in changes if k in REFUSED_AT_RESUME]
    if bad:
        lines = "; ".join(f"{k} {old!r} -> {new!r} ({REFUSED_AT_RESUME[k]})" for k, old, new in bad)
        raise ConfigError(f"cannot resume from {checkpoint} with {lines}. Set the old value(s) back, or start a "
                          f"new run from these weights (run.resume=never with model.hf_path set to an export)")


def describe_changes(changes: list[tuple[str, Any, Any]]) -> list[str]:
    """One ``changed since the checkpoint: key old -> new`` line per change."""
    return [f"changed since the checkpoint: {k} {old!r} -> {new!r}" for k, old, new in changes]
