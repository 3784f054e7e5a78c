"""Worker: a few GRPO steps of the real loop (engine, rewards, trainer, sync), then checks.

    torchrun --nproc-per-node N rl_run.py OUT_DIR MODEL_DIR DATA_JSONL [key=value ...]

Writes OUT_DIR/result.json (rank 0): final metrics, and after training
  * greedy_match: the engine's greedy responses equal HF generate() with the exported policy,
  * synced_diff: max |engine logprob - HF(exported policy) logprob| on the engine's tokens,
  * stale_diff:  the same against the *initial* weights (the negative control: no sync).
Special override ``test.nan_after=K``: rewards become NaN after K scored samples (fault injection).
"""

import json
import os
import sys

import torch


def main():
    out, model_dir, data, *overrides = sys.argv[1:]
    nan_after = None
    for o in list(overrides):
        if o.startswith("test.nan_after="):
            nan_after = int(o.split("=", 1)[1])
            overrides.remove(o)
    from r1mega.config import load_config
    from r1mega.logging.console import setup_logging
    from r1mega.trainer.loop import train

    setup_logging()  # INFO on rank 0, as the CLI: resume and config-change lines are checked by the tests

    if nan_after is not None:
        from r1mega.rewards import REWARDS
        from r1mega.rewards.result import RewardResult
        calls = {"n": 0}

        def nan_reward(text, answer, meta, cfg):
            calls["n"] += 1
            return RewardResult(float("nan") if calls["n"] > nan_after else 1.0, {})

        REWARDS["nan_reward"] = nan_reward
    cfg = load_config(None, [f"model.hf_path={model_dir}", f"data.train={data}", f"run.output_dir={out}",
                             "run.name=run", "data.template=plain", "data.max_prompt_len=64", "model.max_seq_len=128",
                             "rollout.max_new_tokens=12", "rollout.kv_cache_memory_mb=32", "algorithm.group_size=4",
                             "data.prompts_per_step=4", "optimizer.lr=3e-3", "trainer.micro_batch_tokens=256",
                             "reward.num_workers=0", "run.tensorboard=false", "run.export_hf=true",
                             "reward.weights={accuracy: 1.0, language: 1.0}", *overrides])
    error, run, preempted = None, None, None
    try:
        finished = train(cfg)
        metrics, run, preempted = finished.metrics, finished.run, finished.preempted
    except FloatingPointError as e:
        metrics, error = {}, str(e)
    rank = torch.distributed.get_rank()
    result = {"metrics": metrics, "error": error, "preempted": preempted}
    if error is None and preempted is None and cfg.run.export_hf:
        result.update(check_engine(run, model_dir))
    if rank == 0:
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump(result, f, indent=2, default=float)


def check_engine(run, model_dir):
    """Greedy parity and the no-sync negative control, on rank 0's engine (``run``: the finished RLRun)."""
    from transformers import AutoModelForCausalLM

    engine = run.engine
    engine.wake_up()
    prompts = [r.prompt_ids for r in run.records[:3]]
    greedy = engine.generate(prompts, n=1, temperature=0.0, expected_version=run.version)
    # logprobs of sampled (not greedy) tokens at temperature 1 (every rank of a TP engine generates)
    sampled = engine.generate(prompts, n=2, temperature=1.0, expected_version=run.version)
    exported = os.path.join(run.run_dir, "hf")
    res = {}
    if torch.distributed.get_rank() == 0:
        new = AutoModelForCausalLM.from_pretrained(exported).float().eval()
        old = AutoModelForCausalLM.from_pretrained(model_dir).float().eval()
        match, synced, stale = True, 0.0, 0.0
        for s in greedy:
            ids = torch.tensor([s.prompt_ids])
            with torch.no_grad():
                ref = new.generate(ids, max_new_tokens=len(s.response_ids), do_sample=False, min_new_tokens=0,
                                   eos_token_id=None if s.finish_reason == "length" else new.config.eos_token_id)
            match &= ref[0, len(s.prompt_ids):].tolist()[:len(s.response_ids)] == s.response_ids
        for s in sampled:
            seq = torch.tensor([s.prompt_ids + s.response_ids])
            P = len(s.prompt_ids)
            tgt = seq[0, P:]
            with torch.no_grad():
                for model, key in ((new, "synced"), (old, "stale")):
                    lp = torch.log_softmax(model(seq).logits[0, P - 1:-1].double(), -1).gather(1, tgt[:, None])[:, 0]
                    d = (lp - torch.tensor(s.rollout_logprobs, dtype=torch.float64)).abs().max().item()
                    if key == "synced":
                        synced = max(synced, d)
                    else:
                        stale = max(stale, d)
        res = {"greedy_match": bool(match), "synced_diff": synced, "stale_diff": stale}
    return res


if __name__ == "__main__":
    main()
