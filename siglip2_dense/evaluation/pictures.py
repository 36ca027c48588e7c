"""Pictures of evaluated images: image | ground truth | prediction, side by side, one PNG per image.

Every panel is at the ground truth's size (the image, resized by the eval transform, is resized
back). Above the panels, a title: the image's file and its own score (segmentation: the mIoU of that
image alone, over the classes in its ground truth or prediction; depth: abs_rel over its valid
pixels). Segmentation: labels in the data set's palette, ignored ground-truth pixels black, and on
the right a legend of the classes present in either map. Depth: a perceptual colour map
(:mod:`~siglip2_dense.evaluation.colour_maps`) with one scale per image for both prediction and ground
truth -- the range of the valid ground truth -- invalid ground-truth pixels black, and on the right a
colour bar in metres. Text is sized to the picture (:mod:`siglip2_dense.picture_text`); the panels
start :func:`title_height` pixels from the top. Files are named ``<dataset index:05d>_<image stem>.png`` and written atomically,
so several processes can each write the pictures of their own images into one folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from siglip2_dense.data.image_io import write_rgb
from siglip2_dense.evaluation.colour_maps import apply_colour_map
from siglip2_dense.picture_text import beside, legend_panel, row_height, scale_labels, with_title


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


def title_height(panel_height: int) -> int:
    """Pixels above the panels taken by the title strip of a picture whose panels are ``panel_height`` tall."""
    row = row_height(panel_height)
    return row + 2 * max(2, row // 4)


def image_miou(prediction: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> float:
    """The mIoU (percent) of one image: classes with a non-empty union in it, ignored pixels left out."""
    known = target != ignore_index
    predicted, truth = prediction[known].astype(np.int64), target[known].astype(np.int64)
    inside = (predicted >= 0) & (predicted < num_classes) & (truth < num_classes)
    predicted, truth = predicted[inside], truth[inside]
    intersection = np.bincount(truth[predicted == truth], minlength=num_classes)
    union = np.bincount(predicted, minlength=num_classes) + np.bincount(truth, minlength=num_classes) - intersection
    present = union > 0
    return float(100.0 * np.mean(intersection[present] / union[present])) if present.any() else float("nan")


def image_abs_rel(prediction: np.ndarray, target: np.ndarray, min_depth: float, max_depth: float) -> float:
    """``mean(|gt - pred| / gt)`` over the image's valid pixels (prediction clamped to the valid range)."""
    valid = (target > min_depth) & (target < max_depth)
    if not valid.any():
        return float("nan")
    predicted = np.clip(prediction[valid], min_depth, max_depth)
    return float(np.mean(np.abs(target[valid] - predicted) / target[valid]))


def segmentation_picture(
    image: np.ndarray, prediction: np.ndarray, target: np.ndarray, palette: np.ndarray, ignore_index: int = 255,
    class_names: list[str] | None = None, title: str = "",
) -> np.ndarray:
    """Title over image | ground truth | prediction (``[H, W]`` each), a legend of the classes present on the right.

    Returns:
        ``[title_height(H) + max(H, legend), 3W + legend width, 3]`` uint8.
    """
    size = tuple(target.shape[:2])
    panels = side_by_side([
        image_at(image, size),
        labels_to_rgb(target, palette, ignore_index),
        labels_to_rgb(prediction, palette, None),
    ])
    score = image_miou(prediction, target, len(palette), ignore_index)
    present = sorted(set(np.unique(target).tolist()) | set(np.unique(prediction).tolist()))
    present = [k for k in present if 0 <= k < len(palette) and k != ignore_index]
    names = class_names if class_names is not None else [f"class {k}" for k in range(len(palette))]
    entries = [(f"{k}: {names[k] if k < len(names) else k}", tuple(int(c) for c in palette[k])) for k in present]
    row = row_height(size[0])
    body = beside(Image.fromarray(panels), legend_panel(entries, row))
    heading = f"{title}   mIoU {score:.1f}   (image | ground truth | prediction)".strip()
    return np.asarray(with_title(body, heading, row))


def depth_colour_bar(low: float, high: float, height: int, colour_map: str = "viridis") -> Image.Image:
    """A vertical colour bar ``height`` pixels tall, ``high`` metres at the top, with ticks labelled in metres."""
    row = row_height(height)
    values = np.linspace(high, low, height)[:, None].repeat(max(8, row), axis=1)
    bar = Image.fromarray(apply_colour_map(values, low, high, colour_map))
    ticks = [(round(i * (height - 1) / 4), f"{high - i * (high - low) / 4:.2f} m") for i in range(5)]
    return beside(bar, scale_labels(ticks, height, row))


def depth_picture(
    image: np.ndarray,
    prediction: np.ndarray,
    target: np.ndarray,
    min_depth: float,
    max_depth: float,
    colour_map: str = "viridis",
    title: str = "",
) -> np.ndarray:
    """Title over image | ground truth | prediction on the valid ground truth's range, a colour bar in metres."""
    valid = (target > min_depth) & (target < max_depth)
    reference = target[valid] if valid.any() else prediction[np.isfinite(prediction)]
    low, high = (float(reference.min()), float(reference.max())) if reference.size else (min_depth, max_depth)
    panels = side_by_side([
        image_at(image, tuple(target.shape[:2])),
        depth_to_rgb(target, low, high, valid, colour_map),
        depth_to_rgb(prediction, low, high, None, colour_map),
    ])
    score = image_abs_rel(prediction, target, min_depth, max_depth)
    body = beside(Image.fromarray(panels), depth_colour_bar(low, high, target.shape[0], colour_map))
    heading = f"{title}   abs_rel {score:.3f}   (image | ground truth | prediction)".strip()
    return np.asarray(with_title(body, heading, row_height(target.shape[0])))


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
        class_names: segmentation: the legend's names, one per class (default ``class <k>``).
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
        class_names: list[str] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.task = task
        self.palette = palette
        self.ignore_index = ignore_index
        self.min_depth = min_depth
        self.max_depth = max_depth
        self.colour_map = colour_map
        self.class_names = class_names

    def __call__(self, index: int, item: dict[str, Any], prediction: torch.Tensor) -> Path:
        """Draw image ``index``: ``item`` as the data set gave it, ``prediction [H, W]`` at the target's size."""
        predicted = prediction.detach().cpu().numpy()
        title = Path(item["path"]).name if item.get("path") else f"image {index}"
        if self.task == "segmentation":
            picture = segmentation_picture(item["image"], predicted, np.asarray(item["mask"]), self.palette,
                                           self.ignore_index, self.class_names, title)
        else:
            picture = depth_picture(item["image"], predicted, np.asarray(item["depth"], dtype=np.float64),
                                    self.min_depth, self.max_depth, self.colour_map, title)
        path = self.directory / picture_name(index, item.get("path"))
        write_rgb(path, picture)
        return path
