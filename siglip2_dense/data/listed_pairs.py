"""(image, label map) pairs found the way mmsegmentation's ``BaseSegDataset`` finds them, and the
data set class that reads them.

Two ways to list a split, as ``BaseSegDataset.load_data_list``:

- with a split file (``ann_file``, VOC and Pascal Context): one name per line, image
  ``<image_dir>/<name><image_suffix>``, label ``<label_dir>/<name><label_suffix>``, in file order;
- without one (COCO, Cityscapes): every file under ``image_dir`` (recursively) whose name ends with
  ``image_suffix``, sorted by path; its label has the same relative path with the suffix swapped.

A missing folder raises :class:`DataError` naming the folder that was given, what it holds, the
folder expected and where the data set's official download / conversion is documented.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from siglip2_dense.data.image_io import check_same_size, read_label_map, read_rgb
from siglip2_dense.data.label_png import IGNORE_INDEX
from siglip2_dense.errors import DataError, MissingFileError, RequestError
from siglip2_dense.files import read_text_file

Pair = tuple[Path, Path]


def require_folders(root: Path, required: tuple[str, ...], dataset: str, expected: str, docs: str) -> None:
    """Raise :class:`DataError` unless every ``root / r`` exists.

    Args:
        required: paths relative to ``root`` (folders or files).
        dataset: the data set's name for the message (``"Pascal VOC 2012"``).
        expected: what ``root`` must be (``"the VOCdevkit/VOC2012 folder"``).
        docs: where the official download / conversion is documented.
    """
    missing = [r for r in required if not (root / r).exists()]
    if not missing:
        return
    if not root.is_dir():
        found = "does not exist"
    else:
        entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
        shown = ", ".join(entries[:10]) + (", ..." if len(entries) > 10 else "")
        found = f"holds [{shown}]" if entries else "is empty"
    raise DataError(
        f"{dataset}: the folder given, {root}, {found}; expected {expected} holding "
        f"{', '.join(required)} (missing: {', '.join(missing)}). Download and conversion: {docs}"
    )


def pairs_from_split_file(
    split_file: Path, image_dir: Path, label_dir: Path, image_suffix: str, label_suffix: str
) -> list[Pair]:
    """The pairs named by ``split_file`` (one stem per line, blank lines skipped), in file order."""
    names = [line.strip() for line in read_text_file(split_file, "split file").splitlines() if line.strip()]
    if not names:
        raise DataError(f"split file {split_file} names no images; it should list one image name per line")
    pairs = []
    for name in names:
        image, label = image_dir / f"{name}{image_suffix}", label_dir / f"{name}{label_suffix}"
        for path, what in ((image, "image"), (label, "label map")):
            if not path.is_file():
                raise MissingFileError(f"{split_file} lists {name!r} but its {what} {path} does not exist")
        pairs.append((image, label))
    return pairs


def pairs_from_scan(image_dir: Path, label_dir: Path, image_suffix: str, label_suffix: str) -> list[Pair]:
    """Every ``*<image_suffix>`` under ``image_dir`` (recursive, sorted) with its label under ``label_dir``."""
    images = sorted(p for p in image_dir.rglob(f"*{image_suffix}") if p.is_file())
    if not images:
        raise DataError(f"no '*{image_suffix}' images under {image_dir}: the split is empty")
    pairs = []
    for image in images:
        relative = image.relative_to(image_dir).as_posix()
        label = label_dir / (relative[: -len(image_suffix)] + label_suffix)
        if not label.is_file():
            raise MissingFileError(f"image {image} has no label map: expected {label}")
        pairs.append((image, label))
    return pairs


def check_split(split: str, splits: tuple[str, ...], dataset: str) -> None:
    if split not in splits:
        raise RequestError(f"unknown {dataset} split {split!r}; valid choices: {', '.join(splits)}")


class LabelledImageDataset(Dataset):
    """Reads ``self.pairs``; subclasses set the pairs, the class names and :meth:`convert_labels`.

    Items are ``{"image": [H, W, 3] uint8 RGB, "mask": [H, W] uint8 class indices (255 = ignore),
    "path": str}`` (the image path), as :class:`~siglip2_dense.data.ADE20KDataset` gives.
    """

    class_names: tuple[str, ...] = ()
    palette: np.ndarray = np.zeros((0, 3), np.uint8)
    ignore_index: int = IGNORE_INDEX
    num_label_values: int = 0
    """Largest valid stored value + 1 (255 is always allowed); a larger value raises DataError."""

    def __init__(self, pairs: list[Pair], transform: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
        self.pairs = pairs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def convert_labels(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        """Stored values ``[H, W]`` uint8 of ``label_path`` -> returned mask ``[H, W]`` uint8; identity here."""
        return labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        labels = read_label_map(label_path)
        check_same_size(image_path, image, label_path, labels, "its label map")
        invalid = labels[(labels >= self.num_label_values) & (labels != IGNORE_INDEX)]
        if invalid.size:
            raise DataError(
                f"label map {label_path} holds value {int(invalid.max())}; {type(self).__name__} expects "
                f"0..{self.num_label_values - 1} or {IGNORE_INDEX} (ignore)"
            )
        item = {"image": image, "mask": self.convert_labels(labels, label_path), "path": str(image_path)}
        return self.transform(item) if self.transform is not None else item


def as_root(root: str | os.PathLike) -> Path:
    return Path(root).expanduser()
