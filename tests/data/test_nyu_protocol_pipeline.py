"""The NYUv2 training pipeline of DINOv2's configs against a transcription of the depth toolbox's classes
(zhyever/Monocular-Depth-Estimation-Toolbox depth/datasets/pipelines/transforms.py: NYUCrop, ColorAug),
on fixed draws: the crop box and the colour values on 0-255."""

from __future__ import annotations

import numpy as np
import pytest

from siglip2_dense.data.augmentations import DepthColorAugment, FixedCrop
from siglip2_dense.data.transforms import PairedTransform, build_depth_train_transform
from siglip2_dense.errors import RequestError


def toolbox_nyu_crop(img: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NYUCrop(depth=True): results["img"][45:472, 43:608, :], results["depth_gt"][45:472, 43:608]."""
    return img[45:472, 43:608, :], depth[45:472, 43:608]


def toolbox_colour(image: np.ndarray, gamma: float, brightness: float, colors: np.ndarray) -> np.ndarray:
    """ColorAug.__call__ after its draws: image**gamma * brightness * colours, clip to [0, 255]."""
    image_aug = image**gamma
    image_aug = image_aug * brightness
    white = np.ones((image.shape[0], image.shape[1]))
    color_image = np.stack([white * colors[i] for i in range(3)], axis=2)
    image_aug *= color_image
    return np.clip(image_aug, 0, 255)


def nyu_item(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
            "depth": rng.uniform(0.5, 9.5, (480, 640)).astype(np.float32), "path": "x"}


def test_fixed_crop_is_the_toolbox_box():
    item = nyu_item()
    out = PairedTransform([FixedCrop(45, 472, 43, 608)])(item)
    image, depth = toolbox_nyu_crop(item["image"], item["depth"])
    assert out["image"].shape == (427, 565, 3)
    assert np.array_equal(out["image"], image) and np.array_equal(out["depth"], depth)
    with pytest.raises(RequestError, match="at least 472x608"):
        PairedTransform([FixedCrop(45, 472, 43, 608)])({"image": item["image"][:400]})


def test_colour_on_0_255_equals_the_toolbox():
    image = nyu_item(1)["image"]
    gamma, brightness, colors = 1.1, 1.2, np.array([0.95, 1.05, 1.1])
    ours = DepthColorAugment(scale="pixel").apply(image, gamma=gamma, gain=brightness * colors)
    theirs = toolbox_colour(image, gamma, brightness, colors)
    assert np.abs(ours.astype(np.float64) - theirs).max() <= 0.5  # ours rounds to uint8
    # the audit's example: 128 ** 1.1 = 207.94 (the audit truncates to 207; rounded 208) on 0-255, 119.5 on [0, 1]
    grey = np.full((1, 1, 3), 128, np.uint8)
    assert DepthColorAugment(scale="pixel").apply(grey, gamma=1.1, gain=np.ones(3))[0, 0, 0] == 208
    assert DepthColorAugment(scale="unit").apply(grey, gamma=1.1, gain=np.ones(3))[0, 0, 0] == 119


def test_pipeline_crop_lies_inside_the_fixed_crop_and_keeps_pixels():
    item = nyu_item(2)
    transform = build_depth_train_transform(crop_size=(416, 544), rotate_degrees=0, flip_prob=0, colour_prob=0,
                                            fixed_crop=(45, 472, 43, 608), seed=3)
    out = transform(item)
    assert out["image"].shape == (416, 544, 3)
    inner = item["image"][45:472, 43:608]
    # find the 416x544 window of the fixed crop the random crop took: its top-left pixel row must match exactly
    found = [(y, x) for y in range(427 - 416 + 1) for x in range(565 - 544 + 1)
             if np.array_equal(inner[y, x : x + 544], out["image"][0])]
    assert len(found) == 1
    y, x = found[0]
    assert np.array_equal(inner[y : y + 416, x : x + 544], out["image"])
    assert np.array_equal(item["depth"][45:472, 43:608][y : y + 416, x : x + 544], out["depth"])
