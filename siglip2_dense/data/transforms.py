"""The standard train and eval pipelines, as callables on data set items.

Every builder returns a callable ``item -> item`` to pass as a data set's ``transform``: it transforms
``item["image"]`` (``[H, W, 3]`` uint8) together with ``item["mask"]`` (``[H, W]`` uint8) and/or
``item["depth"]`` (``[H, W]`` float32 metres) when present, and keeps every other key (``"path"``, ...).
Images are resized bilinearly, masks and depth with nearest neighbour (pixel-centre aligned).

Segmentation (ADE20K, mmsegmentation / DINOv2 recipe)::

    train: short side -> 512 * U(0.5, 2.0) (long side <= 2048 * same) -> 512x512 crop, cat_max_ratio 0.75
           -> horizontal flip (1/2) -> PhotoMetricDistortion -> pad to 512x512 (image 0, mask 255), bottom/right
           (pad_after_normalise: the item records its real size; the loop zeroes the padding after normalisation)
    eval:  short side -> 512 (long side <= 2048), image only: the mask stays at its original size, as
           mmsegmentation scores predictions resized back to the original image.

Depth (NYUv2, BTS / DINOv2 recipe)::

    train: [fixed crop rows 45:472, cols 43:608 (NYUCrop)] -> rotate U(-2.5, 2.5) degrees (1/2; fill image 0,
           depth 0 = invalid) -> horizontal flip (1/2) -> 416x544 crop (padded with 0 when the image is
           smaller) -> colour augmentation (1/2; gamma on [0, 1] as BTS or on 0-255 as the toolbox)
           -- the order of DINOv2's NYU ``train_pipeline``.
    eval:  none
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import cv2
import numpy as np

from siglip2_dense.data.augmentations import (
    CatMaxRandomCrop,
    DepthColorAugment,
    FixedCrop,
    PhotoMetricDistortion,
    RandomShortSideResize,
    ShortSideResize,
)

ItemTransform = Callable[[dict[str, Any]], dict[str, Any]]
TARGET_KEYS = ("mask", "depth")


class PairedTransform:
    """Apply an albumentations pipeline to an item's image and its targets (``"mask"``, ``"depth"``).

    ``"depth"`` travels as a second mask target, so every geometric step moves it exactly as the mask
    and it is never interpolated. Keys other than image / mask / depth are passed through unchanged.
    """

    def __init__(self, transforms: list[A.BasicTransform], seed: int | None = None) -> None:
        self.pipeline = A.Compose(transforms, additional_targets={"depth": "mask"}, seed=seed)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        inputs = {key: item[key] for key in ("image", *TARGET_KEYS) if key in item}
        outputs = self.pipeline(**inputs)
        return {**item, **{key: outputs[key] for key in inputs}}


class PaddedPairedTransform(PairedTransform):
    """A :class:`PairedTransform` whose items are then padded bottom / right to ``size`` (image ``fill``, mask
    ``fill_mask``), recording each crop's real ``(height, width)`` as ``item["valid_size"]``: the training
    loop sets the normalised pixels outside it to 0 (``data.pad_after_normalise``; mmseg and DINOv3 pad
    after ``Normalize``). Randomness is the inner pipeline's, so reseeding works as for ``PairedTransform``."""

    def __init__(self, transforms: list[A.BasicTransform], size: tuple[int, int], fill: int = 0,
                 fill_mask: int = 255, seed: int | None = None) -> None:
        super().__init__(transforms, seed=seed)
        self.size, self.fill, self.fill_mask = (int(size[0]), int(size[1])), fill, fill_mask

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        item = super().__call__(item)
        image = item["image"]
        height, width = image.shape[:2]
        bottom, right = max(self.size[0] - height, 0), max(self.size[1] - width, 0)
        out = {**item, "valid_size": (height, width)}
        out["image"] = np.pad(image, ((0, bottom), (0, right), (0, 0)), constant_values=self.fill)
        for key in TARGET_KEYS:
            if key in item:
                out[key] = np.pad(item[key], ((0, bottom), (0, right)), constant_values=self.fill_mask)
        return out


class ImageOnlyResize:
    """Resize ``item["image"]`` to short side ``short_side`` (long side <= ``long_side``); targets untouched."""

    def __init__(self, short_side: int = 512, long_side: int | None = None) -> None:
        self.resize = ShortSideResize(short_side, long_side)

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        params = self.resize.get_params_dependent_on_data({"shape": item["image"].shape}, {})
        return {**item, "image": self.resize.apply(item["image"], **params)}


def build_segmentation_train_transform(
    crop_size: tuple[int, int] = (512, 512),
    short_side: int = 512,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    ignore_index: int = 255,
    flip_prob: float = 0.5,
    photometric: bool = True,
    seed: int | None = None,
    photometric_form: str = "mmseg",
    pad_after_normalise: bool = False,
) -> ItemTransform:
    """mmsegmentation's ADE20K train pipeline; every item comes out ``crop_size`` (image and mask).

    ``photometric_form``: ``mmseg`` or ``dinov3`` (:class:`PhotoMetricDistortion`). ``pad_after_normalise``:
    the items also carry ``valid_size`` (:class:`PaddedPairedTransform`), the padding to be zeroed after
    the backbone's normalisation.
    """
    crop_height, crop_width = crop_size
    steps: list[A.BasicTransform] = [
        RandomShortSideResize(short_side, ratio_range),
        CatMaxRandomCrop(crop_height, crop_width, cat_max_ratio, ignore_index),
        A.HorizontalFlip(p=flip_prob),
    ]
    if photometric:
        steps.append(PhotoMetricDistortion(form=photometric_form))
    if pad_after_normalise:
        return PaddedPairedTransform(steps, (crop_height, crop_width), fill=0, fill_mask=ignore_index, seed=seed)
    steps.append(
        A.PadIfNeeded(
            crop_height,
            crop_width,
            position="top_left",
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=ignore_index,
        )
    )
    return PairedTransform(steps, seed=seed)


def build_segmentation_eval_transform(short_side: int = 512, long_side: int | None = 2048) -> ItemTransform:
    """mmsegmentation's ADE20K test resize: the image only, to short side ``short_side``; the mask keeps its size."""
    return ImageOnlyResize(short_side, long_side)


def build_depth_train_transform(
    crop_size: tuple[int, int] = (416, 544),
    rotate_degrees: float = 2.5,
    flip_prob: float = 0.5,
    colour_prob: float = 0.5,
    seed: int | None = None,
    colour_scale: str = "unit",
    fixed_crop: tuple[int, int, int, int] | None = None,
) -> ItemTransform:
    """BTS / DINOv2's NYUv2 train pipeline; every item comes out ``crop_size`` (image and depth).

    ``fixed_crop``: ``(top, bottom, left, right)`` kept first (NYUv2: ``(45, 472, 43, 608)``);
    ``colour_scale``: ``"unit"`` or ``"pixel"`` (:class:`DepthColorAugment`).
    """
    steps: list[A.BasicTransform] = []
    if fixed_crop is not None:
        steps.append(FixedCrop(*fixed_crop))
    if rotate_degrees > 0:
        steps.append(
            A.Rotate(
                limit=(-rotate_degrees, rotate_degrees),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.5,
            )
        )
    # DINOv2's NYU train_pipeline order: RandomRotate, RandomFlip, RandomCrop, ColorAug
    # (Jiawei-Yang/Denoising-ViT evaluation/configs/vitb_nyu_linear_config.py:10-20, a copy of the official config)
    steps += [
        A.HorizontalFlip(p=flip_prob),
        A.RandomCrop(*crop_size, pad_if_needed=True, pad_position="top_left", fill=0, fill_mask=0),
        DepthColorAugment(p=colour_prob, scale=colour_scale),
    ]
    return PairedTransform(steps, seed=seed)


def build_depth_eval_transform() -> ItemTransform:
    """NYUv2 evaluation uses the full 480x640 image: the identity."""
    return _identity


def _identity(item: dict[str, Any]) -> dict[str, Any]:
    return item
