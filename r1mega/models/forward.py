"""Forward passes over this rank's model chunks through Megatron's pipeline schedule."""

from __future__ import annotations

import torch


def full_logits_forward(chunks: list[torch.nn.Module], input_ids: torch.Tensor,
                        position_ids: torch.Tensor | None = None) -> torch.Tensor | None:
    """Logits [B, T, V] over the real vocabulary on the last pipeline stage (None elsewhere).

    Inference-only helper (parity checks, evaluation): runs Megatron's forward-only schedule
    so it works for any PP layout, and gathers the vocab-parallel logits over TP.
    """
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    B, T = input_ids.shape
    if position_ids is None:
        position_ids = torch.arange(T).unsqueeze(0).expand(B, -1)
    vocab = chunks[0].r1mega_arch.vocab_size
    outputs: list[torch.Tensor] = []

    def forward_step(data_iterator, model):
        ids, pos = next(data_iterator)
        out = model(ids, pos, attention_mask=None)

        def collect(output_tensor, non_loss_data=False):
            logits = gather_from_tensor_model_parallel_region(output_tensor)  # (B, T, V_pad)
            outputs.append(logits[..., :vocab].detach())
            return output_tensor.new_zeros(()), {}

        return out, collect

    fb = get_forward_backward_func()
    was_training = [c.training for c in chunks]
    for c in chunks:
        c.eval()
    with torch.no_grad():
        fb(forward_step_func=forward_step,
           data_iterator=[iter([(input_ids, position_ids)]) for _ in chunks] if len(chunks) > 1
           else iter([(input_ids, position_ids)]),
           model=chunks if len(chunks) > 1 else chunks[0],
           num_microbatches=1, seq_length=T, micro_batch_size=B, forward_only=True)
    for c, t in zip(chunks, was_training):
        c.train(t)
    if ps.is_pipeline_last_stage(ignore_virtual=True):
        return outputs[-1]
    return None
