"""16-bit label maps for data sets with more than 255 classes (ADE-847, Pascal Context 459), as CAT-Seg stores them.

CAT-Seg's preparation scripts (``datasets/prepare_ade20k_full.py``, ``datasets/prepare_pascal_context_459.py``,
github.com/cvlab-kaist/CAT-Seg) save each label map with ``Image.fromarray(<uint16 array>).save(<name>.tif)``:
a single-channel 16-bit TIFF (PIL mode ``I;16``), one class index per pixel; ADE-847 marks unlabelled pixels
65535. :func:`write_label_tiff` writes the same files (PIL, as those scripts).

In this toolkit a mask of such a data set stays ``[H, W]`` uint16 with :data:`WIDE_IGNORE_INDEX` (65535) as its
ignore value: the toolkit's usual 255 is a class there (ADE-847's ``pier``, PC-459's ``monkey``). The data set
says so through its ``ignore_index`` attribute, which the evaluation reads (``build.ignore_index_of``) for the
evaluator, the pictures and the padding of batches; ``SegmentationEvaluator`` compares labels as int64, so
classes 255..K-1 are counted and only 65535 is left out.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from siglip2_dense.data.image_io import check_same_size, read_rgb, read_unchanged
from siglip2_dense.errors import DataError
from siglip2_dense.files import write_bytes_atomic

WIDE_IGNORE_INDEX = 65535
"""The ignore value of 16-bit masks: ADE-847's unlabelled value (``register_ade20k_847.py``: ``ignore_label=65535``)."""

Pair = tuple[Path, Path]


def read_label_tiff(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel 8- or 16-bit label map (CAT-Seg's ``.tif``) as ``[H, W]`` uint16, values as stored.

    Raises:
        MissingFileError: no such file. DataError: not an image, truncated or corrupt, or not one integer
            channel of 8 or 16 bits (colours, floats).
    """
    labels = read_unchanged(path)
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        shape = "x".join(str(s) for s in labels.shape)
        raise DataError(
            f"label map {path} is {labels.dtype} with shape {shape}; expected a single-channel 16-bit TIFF "
            "(one class index per pixel), as CAT-Seg's preparation scripts write"
        )
    return labels.astype(np.uint16, copy=False)


def label_tiff_bytes(labels: np.ndarray) -> bytes:
    """Encode ``[H, W]`` uint16 class indices as CAT-Seg does: ``Image.fromarray(labels).save(f, "TIFF")``."""
    if labels.ndim != 2 or labels.dtype != np.uint16:
        raise DataError(f"a 16-bit label TIFF holds [H, W] uint16 indices, got {labels.dtype} {labels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(labels)).save(buffer, format="TIFF")
    return buffer.getvalue()


def write_label_tiff(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write ``[H, W]`` uint16 class indices as a 16-bit TIFF (PIL mode ``I;16``), atomically."""
    write_bytes_atomic(path, label_tiff_bytes(labels))


class WideLabelDataset(Dataset):
    """Reads ``self.pairs`` (image, 16-bit label TIFF); subclasses set the pairs, names and ignore values.

    Items: ``{"image": [H, W, 3] uint8 RGB, "mask": [H, W] uint16 (0..K-1 = class, 65535 = ignore),
    "path": str}``.
    """

    class_names: tuple[str, ...] = ()
    ignore_index: int = WIDE_IGNORE_INDEX
    stored_ignore_values: tuple[int, ...] = (WIDE_IGNORE_INDEX,)
    """Stored values that mean "no label"; each becomes :data:`WIDE_IGNORE_INDEX`."""

    def __init__(self, pairs: list[Pair], transform: Callable[[dict[str, Any]], dict[str, Any]] | None) -> None:
        self.pairs = pairs
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        labels = read_label_tiff(label_path)
        check_same_size(image_path, image, label_path, labels, "its label map")
        ignored = np.isin(labels, self.stored_ignore_values)
        invalid = labels[(labels >= len(self.class_names)) & ~ignored]
        if invalid.size:
            ignore = " or ".join(str(v) for v in self.stored_ignore_values)
            raise DataError(
                f"label map {label_path} holds value {int(invalid.max())}; {type(self).__name__} expects "
                f"0..{len(self.class_names) - 1} (a class) or {ignore} (ignore)"
            )
        mask = np.where(ignored, np.uint16(WIDE_IGNORE_INDEX), labels).astype(np.uint16)
        item = {"image": image, "mask": mask, "path": str(image_path)}
        return self.transform(item) if self.transform is not None else item
