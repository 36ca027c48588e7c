"""Whole-image, sliding-window, TTA and NaFlex-native prediction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from siglip2_dense.errors import RequestError
from siglip2_dense.inference import (
    predict_native,
    predict_tta,
    predict_whole,
    resize_logits,
    slide_window,
    slide_window_boxes,
)


def pixelwise_model(in_channels: int = 3, num_outputs: int = 5, seed: int = 0) -> nn.Conv2d:
    """A 1x1 convolution: each output pixel depends only on its own input pixel (and is flip-equivariant)."""
    torch.manual_seed(seed)
    return nn.Conv2d(in_channels, num_outputs, kernel_size=1)


def mmseg_grid_count(size: int, crop: int, stride: int) -> int:
    return max(size - crop + stride - 1, 0) // stride + 1


# --- window boxes ----------------------------------------------------------------------------


def test_boxes_by_hand():
    # 5x5, crop 3, stride 2: grids = (5 - 3 + 1) // 2 + 1 = 2 per side, starts 0 and 2
    assert slide_window_boxes(5, 5, crop=(3, 3), stride=(2, 2)) == [
        (0, 3, 0, 3),
        (0, 3, 2, 5),
        (2, 5, 0, 3),
        (2, 5, 2, 5),
    ]
    # ADE20K after "short side 512": 512 x 683 -> two windows, the second moved back to end at 683
    assert slide_window_boxes(512, 683) == [(0, 512, 0, 512), (0, 512, 171, 683)]
    # smaller than the crop: one window, the whole image
    assert slide_window_boxes(300, 200) == [(0, 300, 0, 200)]
    # the last start (2 * 341 = 682) overshoots and is pulled back to 1100 - 512 = 588
    assert [box[:2] for box in slide_window_boxes(1100, 512)[::1]] == [(0, 512), (341, 853), (588, 1100)]


@pytest.mark.parametrize(
    "height, width", [(512, 512), (512, 683), (683, 512), (100, 700), (513, 1024), (1, 1), (2048, 512)]
)
def test_window_count_matches_mmseg_formula(height, width):
    boxes = slide_window_boxes(height, width, crop=(512, 512), stride=(341, 341))
    assert len(boxes) == mmseg_grid_count(height, 512, 341) * mmseg_grid_count(width, 512, 341)


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 60),
    width=st.integers(1, 60),
    crop_h=st.integers(1, 25),
    crop_w=st.integers(1, 25),
    data=st.data(),
)
def test_boxes_cover_the_image_with_full_size_windows(height, width, crop_h, crop_w, data):
    stride_h = data.draw(st.integers(1, crop_h))
    stride_w = data.draw(st.integers(1, crop_w))
    boxes = slide_window_boxes(height, width, (crop_h, crop_w), (stride_h, stride_w))
    assert len(boxes) == mmseg_grid_count(height, crop_h, stride_h) * mmseg_grid_count(
        width, crop_w, stride_w
    )
    covered = np.zeros((height, width), dtype=int)
    for y1, y2, x1, x2 in boxes:
        assert 0 <= y1 < y2 <= height and 0 <= x1 < x2 <= width
        assert (y2 - y1, x2 - x1) == (min(crop_h, height), min(crop_w, width))
        covered[y1:y2, x1:x2] += 1
    assert covered.min() >= 1


def test_bad_window_arguments():
    with pytest.raises(RequestError, match="gaps"):
        slide_window_boxes(10, 10, crop=(4, 4), stride=(5, 4))
    with pytest.raises(RequestError, match="crop"):
        slide_window_boxes(10, 10, crop=(0, 4))


# --- sliding window --------------------------------------------------------------------------


def test_slide_equals_whole_for_a_pixelwise_model():
    model = pixelwise_model()
    image = torch.randn(2, 3, 37, 53)
    whole = predict_whole(model, image)
    slid = slide_window(model, image, crop=(16, 20), stride=(11, 13))
    assert len(slide_window_boxes(37, 53, (16, 20), (11, 13))) == 3 * 4  # (31 // 11 + 1) * (45 // 13 + 1)
    assert slid.shape == (2, 5, 37, 53)
    torch.testing.assert_close(slid, whole, rtol=1e-5, atol=1e-5)


def test_overlaps_are_averaged_by_hand():
    image = torch.arange(25.0).reshape(1, 1, 5, 5)

    def window_mean(x):  # every pixel of a window gets the window's mean
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x)

    out = slide_window(window_mean, image, crop=(3, 3), stride=(2, 2))[0, 0]
    # window means: top-left 6, top-right 8, bottom-left 16, bottom-right 18
    assert out[0, 0] == 6.0 and out[4, 4] == 18.0
    assert out[0, 2] == 7.0  # (6 + 8) / 2
    assert out[2, 0] == 11.0  # (6 + 16) / 2
    assert out[2, 2] == 12.0  # (6 + 8 + 16 + 18) / 4


def test_window_outputs_on_a_coarser_grid_are_resized_to_the_window():
    def patch_grid_model(x):  # answers on a 2x coarser grid, as a ViT head on its patch grid
        return F.avg_pool2d(x, 2)

    image = torch.randn(1, 3, 16, 16)
    single = slide_window(patch_grid_model, image, crop=(16, 16), stride=(8, 8))
    torch.testing.assert_close(single, resize_logits(patch_grid_model(image), (16, 16)))
    torch.testing.assert_close(single, predict_whole(patch_grid_model, image))
    assert slide_window(patch_grid_model, torch.randn(1, 3, 20, 28), crop=(8, 8), stride=(6, 6)).shape == (
        1,
        3,
        20,
        28,
    )


def test_slide_window_is_differentiable_and_checks_num_outputs():
    model = pixelwise_model()
    image = torch.randn(1, 3, 10, 12, requires_grad=True)
    slide_window(model, image, crop=(6, 6), stride=(4, 4), num_outputs=5).sum().backward()
    assert image.grad is not None and model.weight.grad is not None
    with pytest.raises(RequestError, match="num_outputs=4"):
        slide_window(model, image.detach(), crop=(6, 6), stride=(4, 4), num_outputs=4)
    with pytest.raises(RequestError, match=r"\[B, C, H, W\]"):
        slide_window(model, torch.randn(3, 10, 12))


# --- test-time augmentation ------------------------------------------------------------------


def test_flip_tta_on_a_flip_equivariant_model_equals_no_tta():
    model = pixelwise_model()
    image = torch.randn(2, 3, 9, 14)
    plain = predict_tta(model, image)
    torch.testing.assert_close(plain, model(image).softmax(dim=1))  # probabilities, as SegTTAModel
    torch.testing.assert_close(predict_tta(model, image, flip=True), plain)
    torch.testing.assert_close(
        predict_tta(model, image, flip=True, mode="slide", crop=(5, 6), stride=(3, 4)),
        plain,
        rtol=1e-5,
        atol=1e-6,
    )


def test_flip_tta_averages_softmax_of_the_prediction_flipped_back():
    conv = pixelwise_model(num_outputs=3)

    def left_right_biased(x):  # not flip-equivariant: a ramp over columns
        ramp = torch.linspace(-2.0, 2.0, x.shape[-1])
        return conv(x) + torch.stack([ramp, -ramp, 0 * ramp])[None, :, None, :]

    image = torch.randn(1, 3, 6, 8)
    expected = (
        left_right_biased(image).softmax(1) + left_right_biased(image.flip(-1)).flip(-1).softmax(1)
    ) / 2
    result = predict_tta(left_right_biased, image, flip=True)
    torch.testing.assert_close(result, expected)
    assert not torch.allclose(result, left_right_biased(image).softmax(1), atol=1e-3)


def test_multi_scale_sizes_and_average():
    model = pixelwise_model(num_outputs=4)
    seen_sizes = []

    def recording_model(x):
        seen_sizes.append(tuple(x.shape[-2:]))
        return model(x)

    image = torch.randn(1, 3, 7, 10)
    result = predict_tta(recording_model, image, scales=(1.0, 0.5, 1.5), flip=True)
    # mmcv rescale_size: int(7 * 0.5 + 0.5) = 4, int(10 * 0.5 + 0.5) = 5; int(10.5 + 0.5) = 11, 15
    assert seen_sizes == [(7, 10), (7, 10), (4, 5), (4, 5), (11, 15), (11, 15)]
    per_scale = [
        resize_logits(model(resize_logits(image, size)), (7, 10)).softmax(1)
        for size in [(7, 10), (4, 5), (11, 15)]
    ]
    torch.testing.assert_close(result, sum(per_scale) / 3, rtol=1e-5, atol=1e-6)
    assert result.shape == (1, 4, 7, 10)
    torch.testing.assert_close(result.sum(1), torch.ones(1, 7, 10))


def test_depth_tta_averages_values_and_single_channel_segmentation_uses_sigmoid():
    depth_model = pixelwise_model(num_outputs=1)
    image = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(predict_tta(depth_model, image, flip=True, task="depth"), depth_model(image))
    torch.testing.assert_close(predict_tta(depth_model, image), depth_model(image).sigmoid())


def test_tta_argument_errors_name_the_choices():
    model = pixelwise_model()
    image = torch.randn(1, 3, 8, 8)
    with pytest.raises(RequestError, match="whole"):
        predict_tta(model, image, mode="tiles")
    with pytest.raises(RequestError, match="segmentation"):
        predict_tta(model, image, task="normals")
    with pytest.raises(RequestError, match="scales"):
        predict_tta(model, image, scales=())


# --- NaFlex-native prediction ----------------------------------------------------------------

PATCH = 4


class FakeNaFlexBackbone:
    """Packs each image the NaFlex way: resized to an (h, w) patch grid within the budget, patches
    flattened row-major into the first h*w tokens, padding tokens after."""

    is_naflex = True

    def preprocess(self, images, max_num_patches=None, size=None):
        budget = max_num_patches or 64
        grids, token_lists = [], []
        for image in images:
            height, width = image.shape[:2]
            scale = math.sqrt(budget * PATCH * PATCH / (height * width))
            h, w = max(1, int(height * scale / PATCH)), max(1, int(width * scale / PATCH))
            pixels = resized_image(image, (h * PATCH, w * PATCH))[0]  # [3, h*p, w*p]
            tokens = pixels.reshape(3, h, PATCH, w, PATCH).permute(1, 3, 2, 4, 0).reshape(h * w, -1)
            grids.append((h, w))
            token_lists.append(tokens)
        pixel_values = torch.zeros(len(images), budget, PATCH * PATCH * 3)
        mask = torch.zeros(len(images), budget, dtype=torch.bool)
        for i, tokens in enumerate(token_lists):
            pixel_values[i, : len(tokens)] = tokens
            mask[i, : len(tokens)] = True
        return {
            "pixel_values": pixel_values,
            "pixel_attention_mask": mask,
            "spatial_shapes": torch.tensor(grids, dtype=torch.long),
        }


class FakeDenseModel(nn.Module):
    """Each patch's output is its mean colour (3 channels); the padded grid is filled with 1e6,
    so a crop that takes any padding (or swaps h and w) shows up in the result."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = FakeNaFlexBackbone()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, pixel_values, pixel_attention_mask, spatial_shapes):
        patch_means = pixel_values.reshape(*pixel_values.shape[:2], PATCH * PATCH, 3).mean(2) * self.gain
        h_max, w_max = (int(v) for v in spatial_shapes.max(0).values)
        out = torch.full((len(pixel_values), 3, h_max, w_max), 1e6)
        for i, (h, w) in enumerate(spatial_shapes.tolist()):
            out[i, :, :h, :w] = patch_means[i, : h * w].reshape(h, w, 3).permute(2, 0, 1)
        return out


def resized_image(image: np.ndarray, size) -> torch.Tensor:
    """HWC uint8 -> [1, 3, *size] float in [0, 1]."""
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)


def test_predict_native_crops_each_image_own_grid_and_resizes_to_the_image():
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (30, 50, 3), dtype=np.uint8),
        rng.integers(0, 256, (44, 20, 3), dtype=np.uint8),
    ]
    model = FakeDenseModel()
    with torch.inference_mode():  # the caller chooses; predict_native itself does not turn autograd off
        predictions = predict_native(model, model.backbone.preprocess, images, max_num_patches=16)
    # budget 16: 30x50 -> 3x5 patches, 44x20 -> 5x2 patches; the padded output grid is 5x5
    assert FakeNaFlexBackbone().preprocess(images, 16)["spatial_shapes"].tolist() == [[3, 5], [5, 2]]
    for image, grid, prediction in zip(images, [(3, 5), (5, 2)], predictions):
        own_grid = F.avg_pool2d(resized_image(image, (grid[0] * PATCH, grid[1] * PATCH)), PATCH)
        assert prediction.shape == (3, *image.shape[:2])
        assert float(prediction.max()) <= 1.0  # no padding leaked in
        torch.testing.assert_close(prediction, resize_logits(own_grid, image.shape[:2])[0])
    alone = predict_native(model, model.backbone.preprocess, images[1], max_num_patches=16)  # one image, not in a list
    assert len(alone) == 1 and alone[0].shape == (3, 44, 20)


def test_predict_native_refuses_fixres_backbones(tiny_fixres_dir):
    import siglip2_dense as sd

    backbone = sd.load_backbone(str(tiny_fixres_dir), layers=1)
    with pytest.raises(RequestError, match="NaFlex"):
        predict_native(FakeDenseModel(), backbone.preprocess, [np.zeros((8, 8, 3), dtype=np.uint8)])


class ProbeOnRealBackbone(nn.Module):
    """The DenseModel contract with the real tiny NaFlex backbone and a 1x1-conv head."""

    def __init__(self, backbone) -> None:
        super().__init__()
        self.backbone = backbone
        torch.manual_seed(0)
        self.head = nn.Conv2d(backbone.embed_dim, 7, kernel_size=1)

    def forward(self, **inputs):
        return self.head(self.backbone(**inputs).maps[-1])


def test_predict_native_with_the_real_naflex_backbone_is_batch_invariant(tiny_naflex_dir):
    import siglip2_dense as sd

    model = ProbeOnRealBackbone(sd.load_backbone(str(tiny_naflex_dir), layers=1)).eval()
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, size, dtype=np.uint8) for size in [(24, 60, 3), (50, 30, 3), (32, 32, 3)]]
    with torch.inference_mode():
        grids = model.backbone.preprocess(images, max_num_patches=32)["spatial_shapes"].tolist()
        batched = predict_native(model, model.backbone.preprocess, images, max_num_patches=32)
        alone = [predict_native(model, model.backbone.preprocess, image, max_num_patches=32)[0] for image in images]
    assert len({tuple(g) for g in grids}) == 3  # three different grids: the batch is padded
    for image, batch_prediction, single_prediction in zip(images, batched, alone):
        assert batch_prediction.shape == (7, *image.shape[:2])
        torch.testing.assert_close(batch_prediction, single_prediction, rtol=1e-4, atol=1e-4)
