"""SDPAttention (the core attention of Megatron's local layers, r1mega.models.sdpa_attention)
against a float64 softmax(Q K^T * scale + mask) V written out by hand: grouped-query heads,
causal rows, the block-diagonal mask of packed rows, more keys than queries, and gradients."""

import math

import pytest
import torch

from r1mega.models.sdpa_attention import SDPAttention


def _config(heads, groups, head_dim, dropout=0.0):
    from megatron.core.transformer import TransformerConfig

    return TransformerConfig(num_layers=1, hidden_size=heads * head_dim, num_attention_heads=heads,
                             num_query_groups=groups, kv_channels=head_dim, attention_dropout=dropout,
                             use_cpu_initialization=True)


def _reference(q, k, v, blocked, scale):
    """float64, (S, B, heads, D) layout in and (Sq, B, heads * D) out; ``blocked`` (Sq, Sk) or (B, 1, Sq, Sk)."""
    q, k, v = (x.double().permute(1, 2, 0, 3) for x in (q, k, v))  # (B, h, S, D)
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    s = (q @ k.transpose(-1, -2)) * scale                              # (B, h, Sq, Sk)
    s = s.masked_fill(blocked, float("-inf"))
    out = torch.softmax(s, -1) @ v                                     # (B, h, Sq, D)
    return out.permute(2, 0, 1, 3).reshape(q.shape[2], q.shape[0], -1)


@pytest.mark.parametrize("heads,groups", [(4, 4), (6, 2), (4, 1)])
def test_causal_rows_and_gradients_match_float64(heads, groups):
    torch.manual_seed(heads * 10 + groups)
    S, B, D = 13, 3, 16
    attn = SDPAttention(_config(heads, groups, D), 1, None, None)
    q = torch.randn(S, B, heads, D, requires_grad=True)
    k = torch.randn(S, B, groups, D, requires_grad=True)
    v = torch.randn(S, B, groups, D, requires_grad=True)
    out = attn(q, k, v, None)
    blocked = torch.ones(S, S, dtype=torch.bool).triu(1)
    ref = _reference(q, k, v, blocked, 1 / math.sqrt(D))
    assert out.shape == (S, B, heads * D)
    torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=1e-5)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (q, k, v), g.float())
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)  # both fp32 leaves


def test_packed_rows_attend_inside_their_own_sample_only():
    """The (B, 1, T, T) mask of a packed row (True = blocked, Megatron's convention)."""
    torch.manual_seed(1)
    heads, groups, D, segments = 4, 2, 8, [5, 3, 4]
    T = sum(segments)
    seg = torch.repeat_interleave(torch.arange(len(segments)), torch.tensor(segments))
    blocked = ~(torch.ones(T, T, dtype=torch.bool).tril() & (seg[:, None] == seg[None, :]))
    attn = SDPAttention(_config(heads, groups, D), 1, None, None)
    q, k, v = torch.randn(T, 1, heads, D), torch.randn(T, 1, groups, D), torch.randn(T, 1, groups, D)
    out = attn(q, k, v, blocked.view(1, 1, T, T))
    torch.testing.assert_close(out.double(), _reference(q, k, v, blocked, 1 / math.sqrt(D)), atol=2e-6, rtol=1e-5)
    # the second sample's outputs equal those of the sample alone
    a, b = segments[0], segments[0] + segments[1]
    alone = attn(q[a:b], k[a:b], v[a:b], None)
    torch.testing.assert_close(out[a:b], alone, atol=1e-6, rtol=1e-5)


def test_more_keys_than_queries_is_causal_from_the_bottom_right_and_scale_is_used():
    torch.manual_seed(2)
    Sq, Sk, heads, D = 3, 9, 2, 8
    attn = SDPAttention(_config(heads, heads, D), 1, None, None, softmax_scale=0.3)
    q, k, v = torch.randn(Sq, 2, heads, D), torch.randn(Sk, 2, heads, D), torch.randn(Sk, 2, heads, D)
    blocked = ~torch.ones(Sq, Sk, dtype=torch.bool).tril(Sk - Sq)  # query i sees keys <= Sk - Sq + i
    torch.testing.assert_close(attn(q, k, v, None).double(), _reference(q, k, v, blocked, 0.3), atol=2e-6, rtol=1e-5)


def test_what_it_does_not_do_is_refused_by_name():
    with pytest.raises(NotImplementedError, match="THD packing needs Transformer Engine"):
        SDPAttention(_config(2, 2, 8), 1, None, None)(torch.randn(4, 1, 2, 8), torch.randn(4, 1, 2, 8),
                                                       torch.randn(4, 1, 2, 8), None, packed_seq_params=object())
    cfg = _config(2, 2, 8)
    cfg.softmax_type = "learnable"
    with pytest.raises(NotImplementedError, match="model.attention=megatron_local"):
        SDPAttention(cfg, 1, None, None)


def test_model_attention_picks_the_core_attention_of_local_layers():
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    from r1mega.models import read_hf_config
    from r1mega.models.megatron_gpt import layer_spec
    from tests.hf_models import FAMILIES

    arch = read_hf_config({**{k: v for k, v in FAMILIES["qwen2"].items() if k != "cls"}, "model_type": "qwen2",
                           "architectures": ["Qwen2ForCausalLM"]})
    core = lambda spec: spec.submodules.self_attention.submodules.core_attention  # noqa: E731
    assert core(layer_spec(arch)) is SDPAttention  # model.attention's default
    assert core(layer_spec(arch, attention="megatron_local")) is DotProductAttention
