"""Train / eval pipelines keep image and target aligned, never interpolate targets, and follow the recipes."""

from __future__ import annotations

import numpy as np
import pytest

from siglip2_dense.data import (
    build_depth_eval_transform,
    build_depth_train_transform,
    build_segmentation_eval_transform,
    build_segmentation_train_transform,
    collate_as_lists,
    collate_padded,
)
from siglip2_dense.data.augmentations import (
    CatMaxRandomCrop,
    DepthColorAugment,
    PhotoMetricDistortion,
    RandomShortSideResize,
    ShortSideResize,
)
from siglip2_dense.data.transforms import PairedTransform
from siglip2_dense.errors import RequestError

# ten well separated colours, none black (black is the image padding)
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    np.uint8,
)  # fmt: skip


def colour_coded_segmentation(height=48, width=64, block=12, seed=0):
    """Blocks of random labels 0..9; the image is PALETTE[label], so its colour says its label."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 10, (height // block + 1, width // block + 1))
    labels = np.kron(blocks, np.ones((block, block), int))[:height, :width].astype(np.uint8)
    return {"image": PALETTE[labels], "mask": labels, "path": "coded.png"}


def colour_coded_depth(height=36, width=52, block=9, seed=0):
    """Blocks of depths 1.0, 1.5, ..., 5.5 m; red = 40 * depth, green = 8 * depth ** 2, blue = 90.

    The codes lie on a parabola, so a blend of two codes is never a third code.
    """
    rng = np.random.default_rng(seed)
    blocks = rng.integers(2, 12, (height // block + 1, width // block + 1)) / 2.0
    depth = np.kron(blocks, np.ones((block, block)))[:height, :width].astype(np.float32)
    red, green = (40 * depth).astype(np.uint8), (8 * depth**2).astype(np.uint8)
    image = np.stack([red, green, np.full_like(red, 90)], axis=-1)
    return {"image": image, "depth": depth, "path": "coded_depth.png"}


def interior(image: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood has one colour (away from any blended edge); ``[H, W]`` bool."""
    same = np.ones(image.shape[:2], bool)
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            shifted = padded[dy : dy + image.shape[0], dx : dx + image.shape[1]]
            same &= (shifted == image).all(axis=-1)
    return same


@pytest.mark.parametrize("seed, ratio_range", [(s, (0.5, 2.0)) for s in range(8)] + [(8, (0.3, 0.4))])
def test_segmentation_train_pipeline_keeps_labels_on_their_colours(seed, ratio_range):
    item = colour_coded_segmentation(seed=seed)
    transform = build_segmentation_train_transform(
        crop_size=(40, 40), short_side=48, ratio_range=ratio_range, photometric=False, seed=seed
    )
    out = transform(item)
    image, mask = out["image"], out["mask"]
    assert image.shape == (40, 40, 3) and mask.shape == (40, 40) and mask.dtype == np.uint8
    assert out["path"] == "coded.png"
    assert set(np.unique(mask)) <= set(range(10)) | {255}  # nearest neighbour: no new label values
    padding = (image == 0).all(axis=-1)
    np.testing.assert_array_equal(mask[padding], 255)  # image padded with 0, mask with ignore
    # a pixel keeps an exact palette colour only where all its bilinear taps fall in one block; the
    # nearest-neighbour label must then come from that block too
    matches = (image[:, :, None, :] == PALETTE[None, None]).all(-1)
    checked = matches.any(-1)
    np.testing.assert_array_equal(mask[checked], matches.argmax(-1)[checked])
    assert checked.sum() > 0.4 * (~padding).sum()


def test_segmentation_train_pipeline_pads_small_crops_bottom_right():
    item = colour_coded_segmentation(height=16, width=16, block=4)
    transform = build_segmentation_train_transform(
        crop_size=(40, 48), short_side=16, ratio_range=(1.0, 1.0), seed=0
    )
    out = transform(item)
    assert out["image"].shape == (40, 48, 3)
    assert (out["mask"][16:] == 255).all() and (out["mask"][:, 16:] == 255).all()
    assert (out["image"][16:] == 0).all() and (out["mask"][:16, :16] < 10).all()


def test_photometric_distortion_changes_colours_not_labels():
    item = colour_coded_segmentation()
    changed = 0
    for seed in range(6):
        out = PairedTransform([PhotoMetricDistortion()], seed=seed)(item)
        np.testing.assert_array_equal(out["mask"], item["mask"])
        changed += not np.array_equal(out["image"], item["image"])
    assert changed >= 4


def test_photometric_steps_follow_mmsegmentation():
    distort = PhotoMetricDistortion()
    grey = np.full((2, 2, 3), 100, np.uint8)
    none = {"brightness": None, "contrast_first": True, "contrast": None, "saturation": None, "hue": None}
    assert (distort.apply(grey, **{**none, "brightness": 200.0}) == 255).all()  # clipped, not wrapped
    assert (distort.apply(grey, **{**none, "contrast": 0.5}) == 50).all()
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 200
    assert distort.apply(red, **{**none, "hue": 60})[0, 0].tolist() == [0, 200, 0]  # +120 degrees
    assert distort.apply(red, **{**none, "saturation": 0.5})[0, 0].tolist() == [200, 100, 100]


def test_short_side_rescale_range_and_aspect():
    image = np.zeros((100, 300, 3), np.uint8)
    shorts = []
    for seed in range(40):
        resize = RandomShortSideResize(50, (0.5, 2.0))
        resize.set_random_seed(seed)
        height, width = resize(image=image)["image"].shape[:2]
        assert 25 <= height <= 100 and abs(width - 3 * height) <= 2
        shorts.append(height)
    assert min(shorts) < 35 and max(shorts) > 85
    # the long side is capped at 4x the short target, as mmseg's scale=(2048, 512)
    assert ShortSideResize(50)(image=np.zeros((10, 1000, 3), np.uint8))["image"].shape[:2] == (2, 200)


def test_short_side_rescale_guards_its_arguments():
    with pytest.raises(RequestError, match="short_side=0"):
        RandomShortSideResize(0)


def test_cat_max_crop_prefers_crops_without_a_dominant_class():
    """Left 21 columns class 0, middle 22 ignore, right 21 class 1: few 32-wide crops hold both classes
    at no more than 75% each (ignore not counted); the crop search finds them most of the time."""
    mask = np.full((32, 64), 255, np.uint8)
    mask[:, :21], mask[:, 43:] = 0, 1
    image = np.zeros((32, 64, 3), np.uint8)

    def balanced_fraction(ratio):
        balanced = 0
        for seed in range(60):
            crop = CatMaxRandomCrop(32, 32, cat_max_ratio=ratio)
            crop.set_random_seed(seed)
            out = crop(image=image, mask=mask)["mask"]
            counts = np.array([(out == 0).sum(), (out == 1).sum()])
            balanced += counts.min() > 0 and counts.max() / counts.sum() < 0.75
        return balanced / 60

    assert balanced_fraction(0.75) > 0.7
    assert balanced_fraction(1.0) < 0.35  # plain random crops: 5 of 33 offsets are balanced


@pytest.mark.parametrize("seed", range(8))
def test_depth_train_pipeline_keeps_depth_on_its_colours(seed):
    item = colour_coded_depth(seed=seed)
    transform = build_depth_train_transform(crop_size=(24, 32), colour_prob=0.0, seed=seed)
    out = transform(item)
    image, depth = out["image"], out["depth"]
    assert image.shape == (24, 32, 3) and depth.shape == (24, 32) and depth.dtype == np.float32
    assert set(np.unique(depth)) <= set(np.unique(item["depth"])) | {0.0}  # never interpolated
    filled = interior(image) & (image == 0).all(-1)  # rotation border
    np.testing.assert_array_equal(depth[filled], 0.0)
    # pixels with an exact code colour (all bilinear taps in one block) carry that block's depth
    codes = np.unique(item["image"].reshape(-1, 3), axis=0)
    coded = (image[:, :, None, :] == codes[None, None]).all(-1).any(-1)
    np.testing.assert_array_equal(depth[coded], image[..., 0][coded] / np.float32(40))
    assert coded.sum() > 0.4 * depth.size


def test_depth_rotation_happens_and_is_small():
    rotated = 0
    for seed in range(10):
        item = colour_coded_depth(seed=seed)
        out = build_depth_train_transform(crop_size=(36, 52), flip_prob=0, colour_prob=0, seed=seed)(item)
        rotated += not np.array_equal(out["depth"], item["depth"])
        assert (out["depth"] == item["depth"]).mean() > 0.8  # 2.5 degrees moves few pixels
    assert 2 <= rotated <= 8


def test_depth_colour_augment_leaves_depth_alone():
    item = colour_coded_depth()
    out = PairedTransform([DepthColorAugment(p=1.0)], seed=0)(item)
    np.testing.assert_array_equal(out["depth"], item["depth"])
    assert not np.array_equal(out["image"], item["image"])
    identity = DepthColorAugment().apply(item["image"], gamma=1.0, gain=np.ones(3))
    np.testing.assert_array_equal(identity, item["image"])


def test_depth_crop_pads_small_images_with_invalid_depth():
    item = colour_coded_depth(height=20, width=20)
    out = build_depth_train_transform(crop_size=(24, 32), rotate_degrees=0, flip_prob=0, colour_prob=0)(item)
    np.testing.assert_array_equal(out["depth"][:20, :20], item["depth"])
    assert (out["depth"][20:] == 0).all() and (out["depth"][:, 20:] == 0).all()


def test_pipelines_are_reproducible_from_their_seed():
    item = colour_coded_segmentation()
    first = build_segmentation_train_transform(crop_size=(32, 32), short_side=48, seed=5)(item)
    second = build_segmentation_train_transform(crop_size=(32, 32), short_side=48, seed=5)(item)
    np.testing.assert_array_equal(first["image"], second["image"])
    np.testing.assert_array_equal(first["mask"], second["mask"])


def test_eval_transforms():
    item = colour_coded_segmentation(height=30, width=40)
    out = build_segmentation_eval_transform(short_side=24)(item)
    assert out["image"].shape == (24, 32, 3)
    assert out["mask"] is item["mask"]  # scored at the original resolution, as mmsegmentation
    depth_item = colour_coded_depth()
    assert build_depth_eval_transform()(depth_item) is depth_item


def test_collate_padded_pads_with_documented_values():
    small, large = colour_coded_segmentation(16, 24), colour_coded_segmentation(20, 18)
    batch = collate_padded([small, large])
    assert batch["image"].shape == (2, 3, 20, 24) and batch["image"].dtype.is_floating_point is False
    assert batch["mask"].shape == (2, 20, 24) and str(batch["mask"].dtype) == "torch.int64"
    assert batch["image_size"].tolist() == [[16, 24], [20, 18]]
    assert batch["target_size"].tolist() == [[16, 24], [20, 18]]
    assert (batch["mask"][0, 16:] == 255).all() and (batch["image"][0, :, 16:] == 0).all()
    np.testing.assert_array_equal(batch["image"][1, :, :, :18].permute(1, 2, 0).numpy(), large["image"])
    np.testing.assert_array_equal(batch["mask"][1, :, :18].numpy(), large["mask"])
    assert batch["path"] == ["coded.png", "coded.png"]
    depth = collate_padded([colour_coded_depth(10, 12), colour_coded_depth(8, 14)])
    assert depth["depth"].shape == (2, 10, 14) and (depth["depth"][1, 8:] == 0).all()


def test_collate_as_lists_keeps_values():
    items = [colour_coded_segmentation(16, 24), colour_coded_segmentation(20, 18)]
    batch = collate_as_lists(items)
    assert batch["image"][1] is items[1]["image"] and len(batch["mask"]) == 2
    with pytest.raises(RequestError, match="empty batch"):
        collate_padded([])
