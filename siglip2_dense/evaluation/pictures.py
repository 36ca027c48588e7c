"""Pictures of evaluated images: image | prediction | ground truth, side by side, one PNG per image.

Every panel is at the ground truth's size (the image, resized by the eval transform, is resized
back). Segmentation: labels in the data set's palette, ignored ground-truth pixels black. Depth:
a perceptual colour map (:mod:`~siglip2_dense.evaluation.colour_maps`) with one scale per image for both
prediction and ground truth -- the range of the valid ground truth -- and invalid ground-truth
pixels black. Files are named ``<dataset index:05d>_<image stem>.png`` and written atomically,
so several processes can each write the pictures of their own images into one folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from siglip2_dense.data.image_io import write_rgb
from siglip2_dense.evaluation.colour_maps import apply_colour_map


def labels_to_rgb(labels: np.ndarray, palette: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """``[H, W]`` class indices -> ``[H, W, 3]`` uint8 via ``palette [K, 3]``; ignore / out-of-range pixels black."""
    labels = np.asarray(labels).astype(np.int64)
    known = (labels >= 0) & (labels < len(palette))
    if ignore_index is not None:
        known &= labels != ignore_index
    rgb = np.zeros((*labels.shape, 3), dtype=np.uint8)
    rgb[known] = palette[labels[known]]
    return rgb


def depth_to_rgb(
    depth: np.ndarray, low: float, high: float, valid: np.ndarray | None = None, colour_map: str = "viridis"
) -> np.ndarray:
    """``[H, W]`` metres -> ``[H, W, 3]`` uint8, ``low``..``high`` across the colour map; invalid pixels black."""
    return apply_colour_map(depth, low, high, colour_map, valid)


def image_at(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[h, w, 3]`` uint8 resized (bilinear; area when shrinking) to ``size = (H, W)``."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """Panels ``[H, W_i, 3]`` of one height -> ``[H, sum W_i, 3]``, left to right."""
    return np.concatenate(panels, axis=1)


def segmentation_picture(
    image: np.ndarray, prediction: np.ndarray, target: np.ndarray, palette: np.ndarray, ignore_index: int = 255
) -> np.ndarray:
    """``[H, 3W, 3]``: the image, the predicted labels, the ground-truth labels (``[H, W]`` each)."""
    size = tuple(target.shape[:2])
    return side_by_side([
        image_at(image, size),
        labels_to_rgb(prediction, palette, None),
        labels_to_rgb(target, palette, ignore_index),
    ])


def depth_picture(
    image: np.ndarray,
    prediction: np.ndarray,
    target: np.ndarray,
    min_depth: float,
    max_depth: float,
    colour_map: str = "viridis",
) -> np.ndarray:
    """``[H, 3W, 3]``: the image, the predicted depth, the ground truth, on the valid ground truth's range."""
    valid = (target > min_depth) & (target < max_depth)
    reference = target[valid] if valid.any() else prediction[np.isfinite(prediction)]
    low, high = (float(reference.min()), float(reference.max())) if reference.size else (min_depth, max_depth)
    return side_by_side([
        image_at(image, tuple(target.shape[:2])),
        depth_to_rgb(prediction, low, high, None, colour_map),
        depth_to_rgb(target, low, high, valid, colour_map),
    ])


def picture_name(index: int, path: str | None) -> str:
    """``<index:05d>_<stem>.png``: unique per data-set index, readable by image name."""
    stem = Path(path).stem if path else "image"
    return f"{index:05d}_{stem}.png"


class EvaluationPictures:
    """Writes one picture per evaluated image into ``directory`` (a callback of the evaluation loop).

    Args:
        directory: where the PNGs go (created).
        task: ``segmentation`` or ``depth``.
        palette: segmentation: ``[K, 3]`` uint8 class colours.
        ignore_index: segmentation: the ground-truth label drawn black.
        min_depth, max_depth: depth: the valid ground-truth range.
        colour_map: depth: ``viridis`` or ``turbo``.
    """

    def __init__(
        self,
        directory: str | Path,
        task: str,
        palette: np.ndarray | None = None,
        ignore_index: int = 255,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        colour_map: str = "viridis",
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.task = task
        self.palette = palette
        self.ignore_index = ignore_index
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.colour_map = colour_map

    def __call__(self, index: int, item: dict[str, Any], prediction: torch.Tensor) -> Path:
        """Draw image ``index``: ``item`` as the data set gave it, ``prediction [H, W]`` at the target's size."""
        predicted = prediction.detach().cpu().numpy()
        if self.task == "segmentation":
            picture = segmentation_picture(item["image"], predicted, np.asarray(item["mask"]), self.palette,
                                           self.ignore_index)
        else:
            picture = depth_picture(item["image"], predicted, np.asarray(item["depth"], dtype=np.float64),
                                    self.min_depth, self.max_depth, self.colour_map)
        path = self.directory / picture_name(index, item.get("path"))
        write_rgb(path, picture)
        return path
