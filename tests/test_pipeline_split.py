"""Uneven pipeline splits (parallel.first_stage_layers / last_stage_layers): r1mega's pure layer map
(``parallel.layout.stage_layers``, used by the planner and the layout check) equals the layers
megatron-core builds on each pipeline rank and virtual stage, and bad splits get clear errors."""

import pytest
import torch

from r1mega.config import ConfigError
from r1mega.config.sections import ParallelConfig
from r1mega.parallel.layout import check_layout, stage_layers

# (layers, pipeline, virtual, first, last)
CASES = [(4, 2, None, None, None), (4, 2, None, 1, None), (4, 2, None, None, 1), (7, 3, None, 1, None),
         (61, 8, None, 5, 8), (61, 16, None, 3, 2), (8, 4, 2, None, None), (18, 4, 2, 2, 4), (14, 3, 2, 2, None),
         (10, 3, None, None, 4)]


def _megatron_layers(L, pp, vp, first, last):
    from megatron.core.transformer import TransformerConfig
    from megatron.core.transformer.transformer_block import get_num_layers_to_build
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    cfg = TransformerConfig(num_layers=L, hidden_size=64, num_attention_heads=4, pipeline_model_parallel_size=pp,
                            virtual_pipeline_model_parallel_size=vp, num_layers_in_first_pipeline_stage=first,
                            num_layers_in_last_pipeline_stage=last, pipeline_dtype=torch.float32,
                            use_cpu_initialization=True)
    out = []
    for r in range(pp):
        chunks = []
        for k in range(vp or 1):
            v = k if vp else None
            off = get_transformer_layer_offset(cfg, vp_stage=v, pp_rank=r)
            chunks.append(list(range(off, off + get_num_layers_to_build(cfg, vp_stage=v, pp_rank=r))))
        out.append(chunks)
    return out


@pytest.mark.parametrize("case", CASES, ids=[f"L{c[0]}-pp{c[1]}-vp{c[2]}-f{c[3]}-l{c[4]}" for c in CASES])
def test_stage_layers_match_megatron(case):
    mine = stage_layers(*case)
    assert mine == _megatron_layers(*case)
    assert sorted(i for rank in mine for chunk in rank for i in chunk) == list(range(case[0]))


class _Arch:
    num_heads = num_kv_heads = 4
    vocab_size = 100
    num_experts = 0

    def __init__(self, layers):
        self.num_layers = layers


def test_layout_accepts_uneven_and_explains_bad_splits():
    lay = check_layout(ParallelConfig(pipeline=16, first_stage_layers=3, last_stage_layers=2), 16, _Arch(61))
    assert (lay.first_stage_layers, lay.last_stage_layers) == (3, 2) and "first stage 3" in lay.describe()
    with pytest.raises(ConfigError, match=r"num_hidden_layers \(61\) must be a multiple of parallel.pipeline \(16\)"
                                          r".*first_stage_layers"):
        check_layout(ParallelConfig(pipeline=16), 16, _Arch(61))
    with pytest.raises(ConfigError, match=r"minus the first/last-stage layers \(57\) must split evenly over 14"):
        check_layout(ParallelConfig(pipeline=16, first_stage_layers=2, last_stage_layers=2), 16, _Arch(61))
    with pytest.raises(ConfigError, match=r"stage 0 holds 3 layers, not a multiple of parallel.virtual_pipeline"):
        check_layout(ParallelConfig(pipeline=2, virtual_pipeline=2, first_stage_layers=3), 2, _Arch(7))
    with pytest.raises(ConfigError, match=r"parallel.first_stage_layers \(0\) must be >= 1"):
        ParallelConfig(pipeline=2, first_stage_layers=0).validate()
    with pytest.raises(ConfigError, match=r"parallel.last_stage_layers \(2\) needs parallel.pipeline > 1"):
        ParallelConfig(last_stage_layers=2).validate()
    with pytest.raises(ConfigError, match=r"must equal num_hidden_layers \(4\)"):
        check_layout(ParallelConfig(pipeline=2, first_stage_layers=1, last_stage_layers=1), 2, _Arch(4))


def test_planner_counts_each_stage_layers():
    from r1mega.plan.estimate import rank_layers

    assert rank_layers(61, 16, None, 0, 3, 2) == [0, 1, 2]
    assert rank_layers(61, 16, None, 15, 3, 2) == [59, 60]
    assert rank_layers(61, 16, None, 1, 3, 2) == [3, 4, 5, 6]
    assert rank_layers(8, 2, 2, 1) == [2, 3, 6, 7]  # interleaved, even
