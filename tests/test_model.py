"""DenseModel: training through every head, and save / load that restores outputs bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_four_block_checkpoint, random_image
from safetensors.torch import load_file, save_file

import siglip2_dense as sd
from siglip2_dense.errors import CheckpointError, MissingFileError
from siglip2_dense.heads import build_head
from siglip2_dense.losses import segmentation_cross_entropy, silog_loss
from siglip2_dense.model import CONFIG_FILE, DenseModel, dense_model_config, save_dense_model_config

HEADS = {
    "linear": ("linear", dict(num_classes=5)),
    "bins": ("bins", dict(num_bins=16, min_depth=0.5, max_depth=4.0)),
    "dpt-seg": ("dpt", dict(num_classes=5)),
    "dpt-depth": ("dpt", dict(task="depth", num_bins=16, min_depth=0.5, max_depth=4.0)),
}


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    return build_four_block_checkpoint(tmp_path_factory.mktemp("dense-model-naflex"), naflex=True)


@pytest.fixture(scope="module")
def inputs(checkpoint_dir):
    rng = np.random.default_rng(5)
    images = [random_image(rng, 40, 64), random_image(rng, 64, 20), random_image(rng, 30, 30)]
    return sd.load_backbone(str(checkpoint_dir)).preprocess(images)


def make_model(checkpoint_dir: Path, case: str, **backbone_kwargs) -> DenseModel:
    backbone = sd.load_backbone(str(checkpoint_dir), layers=4, **backbone_kwargs)
    name, kwargs = HEADS[case]
    torch.manual_seed(0)
    return DenseModel(backbone, build_head(name, in_channels=backbone.out_channels, **kwargs))


def per_image_loss(case: str, output: torch.Tensor, grid_sizes: torch.Tensor) -> torch.Tensor:
    """Each image's real grid against a random target at twice its size (as the training loop will)."""
    generator = torch.Generator().manual_seed(0)
    losses = []
    for index, (h, w) in enumerate(grid_sizes.tolist()):
        prediction = output[index : index + 1, :, :h, :w]
        if output.shape[1] == 1:
            target = torch.rand(1, 2 * h, 2 * w, generator=generator) * 3 + 0.6
            losses.append(silog_loss(prediction, target, min_depth=0.5, max_depth=4.0))
        else:
            target = torch.randint(0, 5, (1, 2 * h, 2 * w), generator=generator)
            losses.append(segmentation_cross_entropy(prediction, target))
    return torch.stack(losses).mean()


def train_one_step(model: DenseModel, case: str, inputs: dict) -> None:
    """One AdamW step, so saved weights and BatchNorm statistics differ from a fresh build."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    per_image_loss(case, model(**inputs), inputs["spatial_shapes"]).backward()
    optimizer.step()
    model.eval()


@pytest.mark.parametrize("case", list(HEADS))
def test_forward_and_backward_with_a_frozen_backbone_train_only_the_head(case, checkpoint_dir, inputs):
    model = make_model(checkpoint_dir, case)
    model.train()
    output = model(**inputs)
    grid = inputs["spatial_shapes"]
    assert output.shape == (3, HEADS[case][1].get("num_classes", 1),
                            int(grid[:, 0].max()), int(grid[:, 1].max()))
    loss = per_image_loss(case, output, grid)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())
    head_grads = [p.grad for p in model.head.parameters()]
    assert head_grads and all(g is not None and torch.isfinite(g).all() for g in head_grads)
    assert sum(g.abs().sum() for g in head_grads) > 0
    model.eval()
    with torch.no_grad():
        composed = model.head(model.backbone(**inputs))
        assert torch.equal(model(**inputs), composed)


def test_features_are_cast_to_the_head_dtype(checkpoint_dir, inputs):
    model = make_model(checkpoint_dir, "linear")
    model.head.double().eval()
    with torch.no_grad():
        assert model(**inputs).dtype == torch.float64


def test_save_and_load_a_frozen_backbone_model_bit_identically(checkpoint_dir, inputs, tmp_path):
    model = make_model(checkpoint_dir, "dpt-depth")
    train_one_step(model, "dpt-depth", inputs)
    with torch.no_grad():
        expected = model(**inputs)
    model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == [CONFIG_FILE, "head.safetensors"]
    config = json.loads((tmp_path / "saved" / CONFIG_FILE).read_text())
    assert config["format_version"] == 1
    assert config["backbone"] == {"name_or_path": str(checkpoint_dir), "layers": [0, 1, 2, 3], "norm": True,
                                  "freeze": True, "tune_last_blocks": 0, "tune_attention": False, "embed_dim": 32, "num_blocks": 4,
                                  "dtype": "float32"}
    assert config["head"]["name"] == "dpt" and config["head"]["config"] == model.head.config
    assert config["weights"] == {"head": "head.safetensors", "backbone": None}
    loaded = DenseModel.from_pretrained(tmp_path / "saved")
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), expected)


@pytest.mark.parametrize("tuning", [dict(tune_last_blocks=1), dict(freeze=False)])
def test_save_and_load_a_tuned_backbone_model_bit_identically(tuning, checkpoint_dir, inputs, tmp_path):
    model = make_model(checkpoint_dir, "linear", **tuning)
    train_one_step(model, "linear", inputs)
    with torch.no_grad():
        expected = model(**inputs)
        untuned = DenseModel(sd.load_backbone(str(checkpoint_dir), layers=4), model.head)(**inputs)
    assert not torch.equal(untuned, expected), "the training step must have changed the backbone"
    model.save_pretrained(tmp_path)
    tuned_keys = {k for k, p in model.backbone.named_parameters() if p.requires_grad}
    assert set(load_file(tmp_path / "backbone.safetensors")) == tuned_keys
    if "tune_last_blocks" in tuning:
        assert all(".layers.3." in k or "post_layernorm" in k or ".head." in k for k in tuned_keys)
    loaded = DenseModel.from_pretrained(tmp_path)
    assert loaded.backbone.first_tuned_block == model.backbone.first_tuned_block
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), expected)
    # saving a frozen model into the same folder removes the stale backbone weights
    DenseModel(sd.load_backbone(str(checkpoint_dir), layers=4), model.head).save_pretrained(tmp_path)
    assert not (tmp_path / "backbone.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_head_saved_for_another_width_names_the_keys_and_both_shapes(checkpoint_dir, tmp_path_factory, tmp_path):
    make_model(checkpoint_dir, "linear").save_pretrained(tmp_path)
    wider = build_four_block_checkpoint(tmp_path_factory.mktemp("wider"), naflex=True, hidden_size=48)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["backbone"]["name_or_path"] = str(wider)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        DenseModel.from_pretrained(tmp_path)
    message = str(error.value)
    assert "classifier.weight: saved (5, 128, 1, 1), model (5, 192, 1, 1)" in message
    assert "norm.running_mean: saved (128,), model (192,)" in message
    assert "in_channels=[32, 32, 32, 32]" in message and "in_channels=[48, 48, 48, 48]" in message


def test_missing_and_unexpected_keys_are_listed(checkpoint_dir, tmp_path):
    make_model(checkpoint_dir, "linear", tune_last_blocks=1).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "head.safetensors")
    weights.pop("classifier.bias")
    weights["extra.weight"] = torch.zeros(2)
    save_file(weights, tmp_path / "head.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys \['classifier.bias'\], unexpected keys \['extra.weight'\]"):
        DenseModel.from_pretrained(tmp_path)
    make_model(checkpoint_dir, "linear", tune_last_blocks=1).save_pretrained(tmp_path)
    backbone = load_file(tmp_path / "backbone.safetensors")
    dropped = sorted(backbone)[0]
    backbone.pop(dropped)
    save_file(backbone, tmp_path / "backbone.safetensors")
    with pytest.raises(CheckpointError, match=rf"backbone .* missing keys \['{dropped}'\]"):
        DenseModel.from_pretrained(tmp_path)


def test_config_writer_and_bad_directories(checkpoint_dir, tmp_path):
    model = make_model(checkpoint_dir, "bins")
    path = save_dense_model_config(tmp_path / "config-only", model.backbone, model.head)
    assert json.loads(path.read_text()) == dense_model_config(model.backbone, model.head)
    with pytest.raises(MissingFileError, match="head.safetensors"):
        DenseModel.from_pretrained(tmp_path / "config-only")
    with pytest.raises(MissingFileError, match="save_pretrained"):
        DenseModel.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / CONFIG_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(CheckpointError, match="not a siglip2-dense model config"):
        DenseModel.from_pretrained(tmp_path / "other")
