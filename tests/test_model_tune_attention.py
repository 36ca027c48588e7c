"""DenseModel save / load of an attention-only tuned backbone (``tune_attention``): exactly the tuned
tensors are saved, the mode is recorded, and loading rebuilds the same backbone with strict keys."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_four_block_checkpoint, random_image
from safetensors.torch import load_file, save_file

import siglip2_dense as sd
from siglip2_dense.errors import CheckpointError
from siglip2_dense.heads import build_head
from siglip2_dense.model import BACKBONE_WEIGHTS_FILE, CONFIG_FILE, DenseModel


@pytest.fixture(scope="module", params=["naflex", "fixres"])
def checkpoint_dir(request, tmp_path_factory):
    naflex = request.param == "naflex"
    return build_four_block_checkpoint(tmp_path_factory.mktemp(f"tune-attention-{request.param}"), naflex=naflex)


@pytest.fixture(scope="module")
def inputs(checkpoint_dir):
    rng = np.random.default_rng(7)
    images = [random_image(rng, 40, 64), random_image(rng, 28, 20)]
    return sd.load_backbone(str(checkpoint_dir)).preprocess(images)


def attention_tuned_model(checkpoint_dir) -> DenseModel:
    backbone = sd.load_backbone(str(checkpoint_dir), layers=[1, 3], tune_attention=True)
    torch.manual_seed(0)
    return DenseModel(backbone, build_head("linear", in_channels=backbone.out_channels, num_classes=4)).eval()


def test_round_trip_restores_the_tuned_weights_and_leaves_the_rest_untouched(checkpoint_dir, inputs, tmp_path):
    model = attention_tuned_model(checkpoint_dir)
    tuned = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name in tuned:
            parameter = model.backbone.get_parameter(name)
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        expected = model.backbone(**inputs)
        logits = model(**inputs)
        fresh = sd.load_backbone(str(checkpoint_dir), layers=[1, 3])(**inputs)
    assert not torch.equal(fresh.maps[0], expected.maps[0]), "the changed weights must change the features"

    model.save_pretrained(tmp_path)
    assert set(load_file(tmp_path / BACKBONE_WEIGHTS_FILE)) == tuned
    record = json.loads((tmp_path / CONFIG_FILE).read_text())["backbone"]
    assert (record["freeze"], record["tune_last_blocks"], record["tune_attention"]) == (True, 0, True)

    loaded = DenseModel.from_pretrained(tmp_path)
    assert loaded.backbone.tune_attention and loaded.backbone.tuned
    assert {n for n, p in loaded.backbone.named_parameters() if p.requires_grad} == tuned
    with torch.no_grad():
        got = loaded.backbone(**inputs)
        assert torch.equal(loaded(**inputs), logits)
    for want_map, got_map in zip(expected.maps, got.maps):
        assert torch.equal(got_map, want_map)
    assert torch.equal(got.pooled, expected.pooled)
    saved_state, loaded_state = model.backbone.state_dict(), loaded.backbone.state_dict()
    assert all(torch.equal(loaded_state[k], saved_state[k]) for k in saved_state)


def test_backbone_weights_are_checked_strictly(checkpoint_dir, tmp_path):
    attention_tuned_model(checkpoint_dir).save_pretrained(tmp_path)
    path = tmp_path / BACKBONE_WEIGHTS_FILE
    saved = load_file(path)
    key = "vision_model.encoder.layers.0.self_attn.k_proj.weight"
    save_file({**saved, key: saved["vision_model.encoder.layers.0.self_attn.q_proj.weight"].clone()}, str(path))
    with pytest.raises(CheckpointError, match=rf"unexpected keys \['{key}'\]"):
        DenseModel.from_pretrained(tmp_path)
    del saved["vision_model.encoder.layers.0.self_attn.v_proj.bias"]
    save_file(saved, str(path))
    with pytest.raises(CheckpointError, match=r"missing keys \['vision_model\.encoder\.layers\.0\.self_attn\.v_proj"):
        DenseModel.from_pretrained(tmp_path)


def test_a_config_written_before_tune_attention_still_loads(checkpoint_dir, tmp_path):
    backbone = sd.load_backbone(str(checkpoint_dir), tune_last_blocks=1)
    DenseModel(backbone, build_head("linear", in_channels=backbone.out_channels, num_classes=4)).save_pretrained(tmp_path)
    config_path = tmp_path / CONFIG_FILE
    config = json.loads(config_path.read_text())
    assert config["backbone"].pop("tune_attention") is False
    config_path.write_text(json.dumps(config))
    loaded = DenseModel.from_pretrained(tmp_path)
    assert not loaded.backbone.tune_attention and loaded.backbone.first_tuned_block == 3
