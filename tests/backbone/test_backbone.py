"""Backbone parity with transformers, layer taps, freezing, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import random_image

import siglip2_dense as sd
from siglip2_dense.errors import CheckpointError, MissingFileError, RequestError


@pytest.fixture(scope="module")
def naflex_reference(tiny_naflex_dir):
    from transformers import Siglip2ImageProcessor, Siglip2Model

    model = Siglip2Model.from_pretrained(tiny_naflex_dir).eval()
    return model, Siglip2ImageProcessor.from_pretrained(tiny_naflex_dir)


@pytest.fixture(scope="module")
def fixres_reference(tiny_fixres_dir):
    from transformers import SiglipImageProcessor, SiglipModel

    model = SiglipModel.from_pretrained(tiny_fixres_dir).eval()
    return model, SiglipImageProcessor.from_pretrained(tiny_fixres_dir)


def mixed_images(rng):
    return [random_image(rng, 40, 60), random_image(rng, 64, 20), random_image(rng, 30, 30)]


def test_naflex_grids_equal_transformers_and_single_image_runs(tiny_naflex_dir, naflex_reference, rng):
    model, processor = naflex_reference
    images = mixed_images(rng)
    bb = sd.load_backbone(str(tiny_naflex_dir), layers=1)
    inputs = bb.preprocess(images)
    with torch.no_grad():
        feats = bb(**inputs)
        reference = model.vision_model(**processor(images=images, return_tensors="pt"))
    shapes = inputs["spatial_shapes"].tolist()
    assert len({tuple(s) for s in shapes}) == 3, "the three aspect ratios must give three grids"
    for i, (h, w) in enumerate(shapes):
        expected = reference.last_hidden_state[i, : h * w].reshape(h, w, -1).permute(2, 0, 1)
        assert (feats.maps[0][i, :, :h, :w] - expected).abs().max() <= 1e-5
        assert feats.mask[i].sum() == h * w and feats.mask[i, :h, :w].all()
        assert feats.maps[0][i][:, ~feats.mask[i]].abs().max() == 0 if (~feats.mask[i]).any() else True
        with torch.no_grad():
            alone = bb(**bb.preprocess([images[i]]))
        assert (alone.maps[0][0] - feats.maps[0][i, :, :h, :w]).abs().max() <= 1e-5
        assert (alone.pooled[0] - feats.pooled[i]).abs().max() <= 1e-5
    assert (feats.pooled - reference.pooler_output).abs().max() <= 1e-5
    assert torch.equal(feats.grid_sizes, inputs["spatial_shapes"])


def test_naflex_preprocess_equals_processor(tiny_naflex_dir, naflex_reference, rng):
    _, processor = naflex_reference
    images = mixed_images(rng)
    bb = sd.load_backbone(str(tiny_naflex_dir))
    ours = bb.preprocess(images, max_num_patches=48)
    theirs = processor(images=images, max_num_patches=48, return_tensors="pt")
    n = ours["pixel_values"].shape[1]
    assert torch.equal(ours["spatial_shapes"], theirs["spatial_shapes"])
    assert torch.equal(ours["pixel_values"], theirs["pixel_values"][:, :n])
    assert torch.equal(ours["pixel_attention_mask"], theirs["pixel_attention_mask"][:, :n].long())
    assert theirs["pixel_attention_mask"][:, n:].sum() == 0, "only all-padding columns are dropped"
    assert (ours["spatial_shapes"].prod(-1) <= 48).all()


@pytest.mark.parametrize("norm", [True, False])
def test_block_taps_equal_hidden_states(tiny_naflex_dir, naflex_reference, rng, norm):
    model, processor = naflex_reference
    images = mixed_images(rng)
    bb = sd.load_backbone(str(tiny_naflex_dir), layers=[0, -2, 2], norm=norm)
    assert bb.layers == [0, 1, 2]
    inputs = bb.preprocess(images)
    with torch.no_grad():
        feats = bb(**inputs)
        out = model.vision_model(**processor(images=images, return_tensors="pt"), output_hidden_states=True)
    post_norm = model.vision_model.post_layernorm
    for tap, block in zip(feats.maps, bb.layers):
        hidden = out.hidden_states[block + 1]
        if norm:
            hidden = post_norm(hidden)
        for i, (h, w) in enumerate(inputs["spatial_shapes"].tolist()):
            expected = hidden[i, : h * w].reshape(h, w, -1).permute(2, 0, 1)
            assert (tap[i, :, :h, :w] - expected).abs().max() <= 1e-5


def test_taps_stop_early_without_pooled(tiny_naflex_dir, rng):
    bb = sd.load_backbone(str(tiny_naflex_dir), layers=[0])
    with torch.no_grad():
        feats = bb(**bb.preprocess(mixed_images(rng)))
    assert feats.pooled is None and len(feats.maps) == 1


def test_fixres_non_native_size_equals_interpolated_transformers(tiny_fixres_dir, fixres_reference, rng):
    model, processor = fixres_reference
    image = random_image(rng, 50, 70)
    bb = sd.load_backbone(str(tiny_fixres_dir), layers=[1, -1])
    inputs = bb.preprocess([image], size=(48, 40))
    theirs = processor(images=image, size={"height": 48, "width": 40}, return_tensors="pt")
    assert torch.equal(inputs["pixel_values"], theirs["pixel_values"])
    with torch.no_grad():
        feats = bb(**inputs)
        out = model.vision_model(theirs["pixel_values"], interpolate_pos_encoding=True, output_hidden_states=True)
    assert feats.maps[1].shape == (1, 32, 12, 10)
    expected = out.last_hidden_state[0].reshape(12, 10, -1).permute(2, 0, 1)
    assert (feats.maps[1][0] - expected).abs().max() <= 1e-5
    tap = model.vision_model.post_layernorm(out.hidden_states[2])[0].reshape(12, 10, -1).permute(2, 0, 1)
    assert (feats.maps[0][0] - tap).abs().max() <= 1e-5
    assert (feats.pooled - out.pooler_output).abs().max() <= 1e-5


def test_fixres_native_size_and_vision_only_checkpoint(tiny_fixres_vision_dir, rng):
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(tiny_fixres_vision_dir).eval()
    bb = sd.load_backbone(str(tiny_fixres_vision_dir))
    inputs = bb.preprocess([random_image(rng, 32, 32)])
    with torch.no_grad():
        feats = bb(**inputs)
        out = model(inputs["pixel_values"])
    assert (feats.maps[0][0] - out.last_hidden_state[0].T.reshape(32, 8, 8)).abs().max() <= 1e-5
    assert (feats.pooled - out.pooler_output).abs().max() <= 1e-5


def test_fixres_pads_to_patch_multiple_and_masks_padding(tiny_fixres_dir, rng):
    bb = sd.load_backbone(str(tiny_fixres_dir))
    small, large = random_image(rng, 18, 22), random_image(rng, 33, 29)
    inputs = bb.preprocess([small, large])
    assert inputs["pixel_values"].shape == (2, 3, 36, 32)
    assert inputs["spatial_shapes"].tolist() == [[5, 6], [9, 8]]
    assert inputs["pixel_values"][0, :, 18:].abs().max() == 0 and inputs["pixel_values"][0, :, :, 22:].abs().max() == 0
    with torch.no_grad():
        feats = bb(**inputs)
        alone = bb(**bb.preprocess([small]))
    assert feats.mask[0].sum() == 30 and feats.mask[1].all()
    # the small image's real patches do not see the batch padding: same as running it alone
    assert (feats.maps[0][0, :, :5, :6] - alone.maps[0][0]).abs().max() <= 1e-5
    assert (feats.pooled[0] - alone.pooled[0]).abs().max() <= 1e-5


def test_tokens_to_grid_round_trip():
    shapes = torch.tensor([[2, 3], [3, 1]])
    tokens = torch.arange(2 * 7 * 2, dtype=torch.float32).reshape(2, 7, 2)
    grid, mask = sd.tokens_to_grid(tokens, shapes)
    assert grid.shape == (2, 2, 3, 3)
    assert mask.tolist() == [[[True] * 3, [True] * 3, [False] * 3], [[True, False, False]] * 3]
    assert grid[0, :, 1, 2].tolist() == tokens[0, 5].tolist()
    assert grid[1, :, 2, 0].tolist() == tokens[1, 2].tolist()
    assert grid[0, :, 2].abs().sum() == 0 and grid[1, :, :, 1:].abs().sum() == 0
    with pytest.raises(RequestError, match="tokens hold 7"):
        sd.tokens_to_grid(tokens, torch.tensor([[2, 4], [1, 1]]))


def test_frozen_backbone_gets_no_gradient_and_stays_in_eval(tiny_naflex_dir, rng):
    bb = sd.load_backbone(str(tiny_naflex_dir))
    bb.train()
    assert not bb.vision_model.training
    assert all(not p.requires_grad for p in bb.parameters())
    feats = bb(**bb.preprocess(mixed_images(rng)))
    assert not feats.maps[0].requires_grad


def test_tuned_backbone_gets_patch_embedding_gradient(tiny_naflex_dir, rng):
    bb = sd.load_backbone(str(tiny_naflex_dir), freeze=False)
    bb.train()
    feats = bb(**bb.preprocess(mixed_images(rng)))
    (feats.maps[0].square().mean() + feats.pooled.sum()).backward()
    grad = bb.vision_model.embeddings.patch_embedding.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_tune_last_blocks_only(tiny_naflex_dir, rng):
    bb = sd.load_backbone(str(tiny_naflex_dir), tune_last_blocks=1)
    bb.train()
    layers = bb.vision_model.encoder.layers
    assert layers[2].training and not layers[0].training
    feats = bb(**bb.preprocess(mixed_images(rng)))
    feats.maps[0].sum().backward()
    assert layers[2].mlp.fc1.weight.grad.abs().sum() > 0
    assert layers[1].mlp.fc1.weight.grad is None
    assert bb.vision_model.embeddings.patch_embedding.weight.grad is None


def test_timm_vit_through_the_same_interface(rng):
    bb = sd.load_backbone("timm:vit_tiny_patch16_224", layers=[2, -1], pretrained=False)
    inputs = bb.preprocess([random_image(rng, 40, 70), random_image(rng, 64, 30)])
    with torch.no_grad():
        feats = bb(**inputs)
    assert [m.shape for m in feats.maps] == [(2, 192, 4, 5)] * 2
    assert feats.mask[0].sum() == 3 * 5 and feats.mask[1].sum() == 4 * 2
    assert feats.pooled.shape == (2, 192)
    same_size = bb.preprocess([random_image(rng, 48, 80), random_image(rng, 48, 80)])
    with torch.no_grad():
        ours = bb(**same_size).maps[1]
        plain = bb.model.forward_intermediates(same_size["pixel_values"], indices=[11], norm=True,
                                               output_fmt="NCHW", intermediates_only=True)[0]
    assert torch.allclose(ours, plain, atol=1e-6)


@pytest.mark.parametrize("layers, message", [(5, r"\[1, 3\]"), ([0, 3], r"-3\.\.2"), ([-4], r"-3\.\.2"), (0, r"\[1, 3\]")])
def test_out_of_range_layers_name_the_valid_range(tiny_naflex_dir, layers, message):
    with pytest.raises(ValueError, match=message):
        sd.load_backbone(str(tiny_naflex_dir), layers=layers)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        sd.load_backbone(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        sd.load_backbone(str(tmp_path / "empty"))
    from transformers import BertConfig

    BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(CheckpointError, match="model_type 'bert'.*siglip2"):
        sd.load_backbone(str(tmp_path / "bert"))


def test_bad_images_and_conversions(tiny_naflex_dir, rng):
    bb = sd.load_backbone(str(tiny_naflex_dir))
    with pytest.raises(RequestError, match="empty image list"):
        bb.preprocess([])
    with pytest.raises(RequestError, match=r"images\[1\].*shape \(2, 3, 4, 5\)"):
        bb.preprocess([random_image(rng, 8, 8), np.zeros((2, 3, 4, 5), np.uint8)])
    with pytest.raises(RequestError, match=r"images\[0\]: got str"):
        bb.preprocess(["not an image"])
    rgb = random_image(rng, 24, 36)
    gray = rgb[:, :, 0]
    as_gray = bb.preprocess([gray])["pixel_values"]
    assert torch.equal(as_gray, bb.preprocess([np.repeat(gray[:, :, None], 3, 2)])["pixel_values"])
    rgba = np.concatenate([rgb, np.full((24, 36, 1), 7, np.uint8)], axis=2)
    assert torch.equal(bb.preprocess([rgba])["pixel_values"], bb.preprocess([rgb])["pixel_values"])
    sixteen = rgb.astype(np.uint16) * 257
    assert torch.equal(bb.preprocess([sixteen])["pixel_values"], bb.preprocess([rgb])["pixel_values"])
    floats = rgb.astype(np.float32) / 255.0
    assert torch.equal(bb.preprocess([floats])["pixel_values"], bb.preprocess([rgb])["pixel_values"])
    with pytest.raises(RequestError, match="size applies|not size"):
        bb.preprocess([rgb], size=32)


def test_padded_cells_are_zero_for_every_backbone(tiny_fixres_dir, rng):
    images = [random_image(rng, 32, 32), random_image(rng, 20, 12)]
    for bb in (sd.load_backbone(str(tiny_fixres_dir)),
               sd.load_backbone("timm:vit_tiny_patch16_224", pretrained=False)):
        batch = images if bb.patch_size == 4 else [random_image(rng, 64, 64), random_image(rng, 20, 40)]
        with torch.no_grad():
            feats = bb(**bb.preprocess(batch))
        assert (~feats.mask[1]).any()
        assert feats.maps[0][1][:, ~feats.mask[1]].abs().max() == 0


def test_timm_real_patches_do_not_attend_to_padding(rng):
    bb = sd.load_backbone("timm:vit_tiny_patch16_224", pretrained=False)
    small = random_image(rng, 32, 48)
    # same canvas (position table) both times; only the padding content differs
    a = bb.preprocess([small, random_image(rng, 64, 64)])
    b = {k: v.clone() for k, v in a.items()}
    b["pixel_values"][0, :, 32:, :] = 5.0
    b["pixel_values"][0, :, :, 48:] = -5.0
    with torch.no_grad():
        fa, fb = bb(**a), bb(**b)
    assert (fa.maps[0][0, :, :2, :3] - fb.maps[0][0, :, :2, :3]).abs().max() <= 1e-5
