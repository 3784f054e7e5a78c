"""Reward models for general (non-reasoning) prompts: DeepSeek-R1's last RL stage.

A Bradley-Terry reward model (InstructGPT, arXiv:2203.02155) on r1mega's Megatron GPT trunk:

    pairs   = load_pairs("prefs.jsonl", tokenizer, max_len=cfg.model.max_seq_len)   # data
    layout  = init_parallel(cfg.parallel, arch)
    rm      = build_reward_model(cfg.model.hf_path, layout, cfg.model)             # trunk + value head
    trainer = RewardTrainer(cfg, rm, total_steps=N)
    fit(trainer, pairs, steps=N, batch=32, eval_pairs=held_out)                    # -log sigmoid(r_c - r_r)
    save_reward_model(rm, out_dir)                                                 # HF trunk + head + meta
    rm      = load_reward_model(out_dir, layout)                                   # any TP/PP layout
    scores  = RewardModelScorer(rm).score(seqs)                                    # (N,) fp32, in RL

Pure modules (no megatron at import): ``data``, ``batch``, ``loss``, ``synthetic``. The command
``r1mega train-rm`` lives in ``cmd`` (``add_parser``, ``cmd_train_rm``). See docs/reward_model.md.
"""

from __future__ import annotations

from r1mega.reward_model.data import PreferencePair, load_pairs, make_pair
from r1mega.reward_model.loss import bradley_terry_loss, pair_metrics, pair_sums

__all__ = ["PreferencePair", "load_pairs", "make_pair", "bradley_terry_loss", "pair_sums", "pair_metrics",
           "RewardModel", "build_reward_model", "load_reward_model", "save_reward_model", "RewardTrainer",
           "evaluate_pairs", "calibrate", "fit", "RewardModelScorer", "mix_rewards"]

_LAZY = {
    "RewardModel": "model", "build_reward_model": "model", "load_reward_model": "model",
    "save_reward_model": "model", "RewardTrainer": "trainer", "evaluate_pairs": "trainer",
    "calibrate": "trainer", "fit": "trainer", "RewardModelScorer": "scorer", "mix_rewards": "scorer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"r1mega.reward_model.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'r1mega.reward_model' has no attribute {name!r}")
