"""ADE20K (SceneParsing, 150 classes) in its release layout ``ADEChallengeData2016``.

::

    ADEChallengeData2016/
      images/{training,validation}/ADE_train_00000001.jpg, ...
      annotations/{training,validation}/ADE_train_00000001.png, ...   (uint8, 0 = "other", k = class k-1)

With ``reduce_zero_label=True`` (the protocol of mmsegmentation and DINOv2) label 0 becomes the ignore
value 255, every label k in 1..150 becomes k - 1, so the returned mask indexes :data:`ADE20K_CLASSES`,
and a pixel already marked 255 (ignore) stays 255, exactly as mmsegmentation's ``LoadAnnotations``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from siglip2_dense.data.image_io import check_same_size, read_label_map, read_rgb
from siglip2_dense.data.label_png import reduce_zero_label
from siglip2_dense.errors import DataError, MissingFileError, RequestError

ADE20K_SPLITS = ("training", "validation")
ADE20K_NUM_CLASSES = 150
IGNORE_INDEX = 255


@cache
def _ade20k_metadata() -> dict[str, Any]:
    text = resources.files("siglip2_dense").joinpath("assets/ade20k_150.json").read_text(encoding="utf-8")
    return json.loads(text)


def ade20k_class_names() -> tuple[str, ...]:
    """The 150 class names in label order (index k = label k+1 in the PNGs)."""
    return tuple(_ade20k_metadata()["classes"])


def ade20k_palette() -> np.ndarray:
    """The standard ADE20K colour palette, ``[150, 3]`` uint8 RGB, one row per class."""
    return np.asarray(_ade20k_metadata()["palette"], dtype=np.uint8)


class ADE20KDataset(Dataset):
    """ADE20K images and label maps, one split.

    Args:
        root: the ``ADEChallengeData2016`` folder.
        split: ``"training"`` or ``"validation"``.
        reduce_zero_label: map 0 ("other") to 255 and shift the other labels down by one.
        transform: optional callable applied to each item dict (see :mod:`siglip2_dense.data.transforms`).

    Items are dicts ``{"image": [H, W, 3] uint8 RGB, "mask": [H, W] uint8, "path": str}`` (the image path);
    the mask holds class indices 0..149 and 255 for ignore (or the raw 0..150 without reduction);
    annotations may mark pixels 255 (ignore), which stay 255 either way.
    """

    class_names: tuple[str, ...] = ade20k_class_names()
    palette: np.ndarray = ade20k_palette()
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "training",
        reduce_zero_label: bool = True,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in ADE20K_SPLITS:
            raise RequestError(f"unknown ADE20K split {split!r}; valid choices: {', '.join(ADE20K_SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.reduce_zero_label = reduce_zero_label
        self.transform = transform
        self.pairs = _list_pairs(self.root / "images" / split, self.root / "annotations" / split)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        labels = read_label_map(label_path)
        check_same_size(image_path, image, label_path, labels, "its annotation")
        invalid = (labels > ADE20K_NUM_CLASSES) & (labels != IGNORE_INDEX)
        if invalid.any():
            raise DataError(
                f"annotation {label_path} holds label {int(labels[invalid].max())}; ADE20K labels are "
                f"0..{ADE20K_NUM_CLASSES} (0 = other, k = class k-1) or {IGNORE_INDEX} (ignore)"
            )
        mask = reduce_zero_label(labels) if self.reduce_zero_label else labels
        item = {"image": image, "mask": mask, "path": str(image_path)}
        return self.transform(item) if self.transform is not None else item


def _list_pairs(images_dir: Path, annotations_dir: Path) -> list[tuple[Path, Path]]:
    for folder in (images_dir, annotations_dir):
        if not folder.is_dir():
            raise MissingFileError(
                f"ADE20K folder not found: {folder}; root must be the ADEChallengeData2016 folder "
                "holding images/{training,validation} and annotations/{training,validation}"
            )
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() == ".jpg")
    if not images:
        raise DataError(f"no .jpg images in {images_dir}: the ADE20K split is empty")
    pairs = []
    for image_path in images:
        label_path = annotations_dir / f"{image_path.stem}.png"
        if not label_path.is_file():
            raise MissingFileError(f"image {image_path} has no annotation: expected {label_path}")
        pairs.append((image_path, label_path))
    return pairs
