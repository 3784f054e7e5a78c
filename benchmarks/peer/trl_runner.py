"""TRL's GRPOTrainer on the peer benchmark's workload; run by bench_peer.py with the TRL environment's
Python (benchmarks/peer/setup_trl_env.sh), never imported by r1mega.

Writes one JSON: per step the wall time and its phases, measured by wrapping the trainer's own
methods (nothing in TRL is changed):

    generation  the model's ``generate`` calls (HF generate, no vLLM: TRL's default)
    scoring     forward passes without gradients (the reference model's logprobs, and the old
                policy's when TRL computes them) and the reward functions
    train       the rest of the step: the policy's forward and backward, the optimizer

and the wall-clock time at which the first step began, for the start-up cost.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--group-size", type=int, required=True)
    ap.add_argument("--prompts-per-step", type=int, required=True)
    ap.add_argument("--completion-len", type=int, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from peer_reward import contains_trl

    rows = [json.loads(line) for line in open(args.prompts)]
    data = Dataset.from_list([{"prompt": r["question"], "answer": str(r["answer"])} for r in rows])
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    n = args.group_size * args.prompts_per_step
    cfg = GRPOConfig(
        output_dir=os.path.join(os.path.dirname(args.out), "trl_out"), per_device_train_batch_size=n,
        gradient_accumulation_steps=1, num_generations=args.group_size, steps_per_generation=1, num_iterations=1,
        max_completion_length=args.completion_len, temperature=1.0, top_p=1.0, beta=args.beta,
        learning_rate=args.lr, max_grad_norm=1.0, max_steps=args.steps, logging_steps=1, save_strategy="no",
        report_to=[], use_vllm=False, seed=args.seed, use_cpu=True, bf16=False, fp16=False,
        dataloader_num_workers=0, disable_tqdm=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[contains_trl], args=cfg, train_dataset=data,
                          processing_class=tok)

    phase = {"generation": 0.0, "scoring": 0.0}
    steps: list[dict] = []
    first_step_wall: list[float] = []

    def timed(fn, name, only_without_grad=False):
        def wrapper(*a, **kw):
            if only_without_grad and torch.is_grad_enabled():
                return fn(*a, **kw)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                phase[name] += time.perf_counter() - t0
        return wrapper

    trainer.model.generate = timed(trainer.model.generate, "generation")
    wrapped = ["model.generate"]
    for attr in ("_get_per_token_logps_and_entropies", "_get_per_token_logps"):
        if hasattr(trainer, attr):
            setattr(trainer, attr, timed(getattr(trainer, attr), "scoring", only_without_grad=True))
            wrapped.append(attr + " (no grad)")
    if hasattr(trainer, "_calculate_rewards"):
        trainer._calculate_rewards = timed(trainer._calculate_rewards, "scoring")
        wrapped.append("_calculate_rewards")

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if not first_step_wall:
                first_step_wall.append(time.time())
            phase.update(generation=0.0, scoring=0.0)
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            total = time.perf_counter() - self.t0
            steps.append({"step": state.global_step, "step_s": total, "generation_s": phase["generation"],
                          "scoring_s": phase["scoring"],
                          "train_s": total - phase["generation"] - phase["scoring"]})

    trainer.add_callback(StepTimer())
    trainer.train()
    lens = [h.get("completions/mean_length") for h in trainer.state.log_history if "completions/mean_length" in h]
    from importlib.metadata import version

    with open(args.out, "w") as f:
        json.dump({"system": "trl", "versions": {p: version(p) for p in ("trl", "transformers", "torch", "accelerate")},
                   "torch_threads": torch.get_num_threads(), "wrapped": wrapped, "steps": steps,
                   "first_step_wall": first_step_wall[0] if first_step_wall else None,
                   "completion_len_mean": sum(lens) / len(lens) if lens else None}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
