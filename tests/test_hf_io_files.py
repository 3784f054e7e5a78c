"""Damaged safetensors files give an error that names the file, the tensor and the fix."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from r1mega.config import ConfigError
from r1mega.models.hf_io import SafetensorsReader


def _model_dir(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"model.embed_tokens.weight": torch.randn(37, 24, generator=g),
               "lm_head.weight": torch.randn(37, 24, generator=g)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    return tensors


def test_intact_file_reads_back(tmp_path):
    tensors = _model_dir(tmp_path)
    r = SafetensorsReader(tmp_path)
    assert all(torch.equal(r.get(k), v) for k, v in tensors.items())


@pytest.mark.parametrize("keep", [0, 5, 60, -40])
def test_truncated_file_names_path(tmp_path, keep):
    _model_dir(tmp_path)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])
    with pytest.raises(ConfigError, match=r"model\.safetensors: not a readable safetensors file .* damaged or "
                                          r"truncated \(\d+ bytes\): copy or export it again"):
        SafetensorsReader(tmp_path).get("lm_head.weight")


def test_sharded_index_with_a_missing_shard(tmp_path):
    _model_dir(tmp_path)
    os.rename(tmp_path / "model.safetensors", tmp_path / "model-00001-of-00002.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors"}}))
    r = SafetensorsReader(tmp_path)
    assert r.get("model.embed_tokens.weight").shape == (37, 24)
    with pytest.raises(ConfigError, match=r"model-00002-of-00002\.safetensors: listed in "
                                          r"model\.safetensors\.index\.json for 'lm_head.weight' but missing"):
        r.get("lm_head.weight")
