"""Train and eval transforms for surface normals: geometry moves the normal vectors with the pixels.

A camera-frame normal (x right, y down, z forward) is a direction, not a value: mirroring the image left
to right mirrors the scene, so the normal's x component changes sign; rotating the image in its plane by
``a`` (a camera roll) rotates the normal's (x, y) by the same 2-D rotation. Cropping and padding leave
normals unchanged. Normals and depth are resampled with nearest neighbour (never interpolated across
an edge); padding and the corners a rotation uncovers get 0 (missing / invalid).

Normals training (the depth recipe of :mod:`.transforms`, with the vectors kept consistent)::

    rotate U(-r, r) degrees (1/2) -> crop (padded with 0 when smaller) -> horizontal flip (x negated)
    -> BTS colour augmentation

Probe3D's NYU pipeline (``evals/datasets/utils.py::get_nyu_transforms``) flips and rotates the normal maps
as images without turning the vectors; its NYU configs leave those steps off (``rotateflip=False``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import albumentations as A
import cv2
import numpy as np

from siglip2_dense.data.augmentations import DepthColorAugment
from siglip2_dense.errors import RequestError

ItemTransform = Callable[[dict[str, Any]], dict[str, Any]]
GEOMETRIC_KEYS = ("depth", "normals", "mask")


def flip_item(item: dict[str, Any]) -> dict[str, Any]:
    """Mirror an item left to right: image, mask and depth flipped; normals flipped with x negated."""
    out = dict(item)
    for key in ("image", *GEOMETRIC_KEYS):
        if key in item:
            out[key] = np.ascontiguousarray(np.asarray(item[key])[:, ::-1])
    if "normals" in item:
        out["normals"] = out["normals"] * np.array([-1.0, 1.0, 1.0], dtype=out["normals"].dtype)
    return out


def rotate_item(item: dict[str, Any], degrees: float) -> dict[str, Any]:
    """Rotate an item counter-clockwise by ``degrees`` about the image centre (OpenCV's convention).

    The image is resampled bilinearly, mask / depth / normals with nearest neighbour; uncovered pixels are
    0. The normals' (x, y) are rotated by the same 2-D matrix as the pixel offsets, so a normal pointing
    right in an image rotated by 90 degrees points up.
    """
    height, width = np.asarray(item["image"]).shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), degrees, 1.0)
    out = dict(item)
    out["image"] = cv2.warpAffine(item["image"], matrix, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    for key in GEOMETRIC_KEYS:
        if key in item:
            out[key] = cv2.warpAffine(np.asarray(item[key]), matrix, (width, height), flags=cv2.INTER_NEAREST,
                                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if "normals" in item:
        normals = out["normals"].copy()
        normals[..., :2] = normals[..., :2] @ matrix[:, :2].T.astype(normals.dtype)
        out["normals"] = normals
    return out


def crop_item(item: dict[str, Any], top: int, left: int, height: int, width: int) -> dict[str, Any]:
    """The ``height x width`` window at ``(top, left)``, zero-padded bottom / right where it leaves the image."""
    out = dict(item)
    for key in ("image", *GEOMETRIC_KEYS):
        if key in item:
            array = np.asarray(item[key])
            window = array[top : top + height, left : left + width]
            padded = np.zeros((height, width, *array.shape[2:]), dtype=array.dtype)
            padded[: window.shape[0], : window.shape[1]] = window
            out[key] = padded
    return out


class NormalsTrainTransform:
    """The random normals training transform (module docstring); every item comes out ``crop_size``.

    Randomness comes from one ``numpy`` generator seeded with ``seed`` (None: fresh entropy);
    :meth:`set_random_seed` reseeds it, and ``pipeline`` is the object that has it, as for a
    ``PairedTransform`` (so training's per-item seeding, :func:`~siglip2_dense.data.order.seed_transform`,
    works unchanged).
    """

    def __init__(
        self,
        crop_size: tuple[int, int],
        rotate_degrees: float = 2.5,
        flip_prob: float = 0.5,
        colour_prob: float = 0.5,
        seed: int | None = None,
    ) -> None:
        if min(crop_size) <= 0 or rotate_degrees < 0 or not 0 <= flip_prob <= 1 or not 0 <= colour_prob <= 1:
            raise RequestError(f"crop_size={crop_size}, rotate_degrees={rotate_degrees}, flip_prob={flip_prob}, "
                               f"colour_prob={colour_prob}: need a positive crop, degrees >= 0, probabilities in [0, 1]")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.rotate_degrees, self.flip_prob = float(rotate_degrees), float(flip_prob)
        self.colour = A.Compose([DepthColorAugment(p=colour_prob)])
        self.set_random_seed(seed)

    @property
    def pipeline(self) -> NormalsTrainTransform:
        return self

    def set_random_seed(self, seed: int | None) -> None:
        """Restart the geometric draws from ``seed`` and seed the colour step from them."""
        self.rng = np.random.default_rng(seed)
        self.colour.set_random_seed(int(self.rng.integers(2**31)))

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        if self.rotate_degrees > 0 and self.rng.random() < 0.5:
            item = rotate_item(item, float(self.rng.uniform(-self.rotate_degrees, self.rotate_degrees)))
        height, width = np.asarray(item["image"]).shape[:2]
        crop_height, crop_width = self.crop_size
        top = int(self.rng.integers(0, max(height - crop_height, 0) + 1))
        left = int(self.rng.integers(0, max(width - crop_width, 0) + 1))
        item = crop_item(item, top, left, crop_height, crop_width)
        if self.rng.random() < self.flip_prob:
            item = flip_item(item)
        return {**item, "image": self.colour(image=item["image"])["image"]}


def build_normals_train_transform(
    crop_size: tuple[int, int] = (416, 544),
    rotate_degrees: float = 2.5,
    flip_prob: float = 0.5,
    colour_prob: float = 0.5,
    seed: int | None = None,
) -> ItemTransform:
    """The normals training transform (rotation, crop, flip with x negated, colour); see the module docstring."""
    return NormalsTrainTransform(crop_size, rotate_degrees, flip_prob, colour_prob, seed)


def build_normals_eval_transform() -> ItemTransform:
    """Normals are evaluated on the full image: the identity."""
    return _identity


def _identity(item: dict[str, Any]) -> dict[str, Any]:
    return item
