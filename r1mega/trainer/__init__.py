"""The GRPO and SFT trainers (loop, policy, batch, samples, sft); importing the package imports none of them."""
