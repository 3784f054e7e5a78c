"""Worker: GRPO steps of the real loop with rollout.mode=async (the last parallel.rollout_ranks
ranks generate, the others train), or any other mode with the same settings.

    torchrun --nproc-per-node N async_run.py OUT_DIR MODEL_DIR DATA_JSONL [key=value ...]

Writes OUT_DIR/result.json (trainer rank 0): final metrics and error. In async mode, the first
rollout engine (every TP rank of it: generating is collective) then checks itself, holding the
final policy, against the policy the trainer exported: max |engine logprob - HF logprob| over
sampled tokens (OUT_DIR/engine.json: engine_diff, engine_version, engine_tp).
"""

import json
import os
import sys
import time

import torch


def main():
    out, model_dir, data, *overrides = sys.argv[1:]
    from r1mega.config import load_config
    from r1mega.logging.console import setup_logging
    from r1mega.trainer.loop import train

    setup_logging()
    cfg = load_config(None, [f"model.hf_path={model_dir}", f"data.train={data}", f"run.output_dir={out}",
                             "run.name=run", "data.template=plain", "data.max_prompt_len=64", "model.max_seq_len=128",
                             "rollout.max_new_tokens=12", "rollout.kv_cache_memory_mb=32", "algorithm.group_size=4",
                             "data.prompts_per_step=4", "optimizer.lr=3e-3", "trainer.micro_batch_tokens=256",
                             "reward.num_workers=0", "run.tensorboard=false", "run.export_hf=true",
                             "eval.before_train=false", "rollout.parity_tokens=0",
                             "reward.weights={accuracy: 1.0, language: 1.0}", *overrides])
    rank = int(os.environ["RANK"])  # torchrun's (async rollout ranks get their own RANK in train)
    error = None
    try:
        result = train(cfg)
    except Exception as e:  # reported by the test, with the rank's traceback in its log
        import traceback
        traceback.print_exc()
        result, error = None, f"{type(e).__name__}: {e}"
    if result is not None and result.rollout_engine is not None:
        if result.rollout_engine.dp_rank == 0:
            check_engine(result.rollout_engine, out, cfg)
        return
    if rank == 0:
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"metrics": result.metrics if result else {}, "error": error,
                       "preempted": result.preempted if result else None}, f, indent=2, default=float)


def check_engine(engine, out, cfg):
    """The rollout engine after the last transfer vs the exported final policy."""
    from transformers import AutoModelForCausalLM

    result = os.path.join(out, "result.json")
    deadline = time.time() + 600
    while not os.path.exists(result) and time.time() < deadline:  # the trainer exports, then writes it
        time.sleep(0.5)
    engine.wake_up()
    prompts = [[5, 17, 3, 9, 11], [7, 7, 2, 30]]
    sampled = engine.generate(prompts, n=2, temperature=1.0, expected_version=cfg.run.steps)
    hf = AutoModelForCausalLM.from_pretrained(os.path.join(out, "run", "hf")).float().eval()
    diff = 0.0
    for s in sampled:
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits.float(), dim=-1)[0]
        P = len(s.prompt_ids)
        ref = logp[P - 1:P - 1 + len(s.response_ids)].gather(-1, torch.tensor(s.response_ids)[:, None])[:, 0]
        diff = max(diff, float((ref - torch.tensor(s.rollout_logprobs)).abs().max()))
    if engine.tp_rank == 0:
        with open(os.path.join(out, "engine.json"), "w") as f:
            json.dump({"engine_diff": diff, "engine_version": engine.policy_version, "engine_tp": engine.tp_size}, f)


if __name__ == "__main__":
    main()
