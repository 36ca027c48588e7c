"""Label maps as mmsegmentation handles them, beside the reading (:func:`~siglip2_dense.data.image_io.read_label_map`,
palette PNGs as their indices): :func:`reduce_zero_label`, id lookup tables, and palette PNG writing.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from siglip2_dense.errors import DataError
from siglip2_dense.files import write_bytes_atomic

IGNORE_INDEX = 255
LABEL_MODES = ("P", "L")


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """mmsegmentation's ``reduce_zero_label``: 0 -> 255 (ignore), k -> k - 1, 255 stays 255.

    ``[H, W]`` uint8 in and out. The rule is mmsegmentation's ``LoadAnnotations._load_seg_map``
    (mmseg/datasets/transforms/loading.py, open-mmlab/mmsegmentation): ``seg[seg == 0] = 255``,
    ``seg = seg - 1``, ``seg[seg == 254] = 255``; so an annotation's own ignore value 255 is not
    turned into class 254.
    """
    reduced = labels.astype(np.int16) - 1
    reduced[(labels == 0) | (labels == IGNORE_INDEX)] = IGNORE_INDEX
    return reduced.astype(np.uint8)


def lookup_table(mapping: dict[int, int], default: int) -> np.ndarray:
    """A ``[256]`` uint8 table: ``table[v] = mapping.get(v, default)``, for ``table[labels]``."""
    table = np.full(256, default, np.uint8)
    for value, target in mapping.items():
        table[value] = target
    return table


def palette_png_bytes(labels: np.ndarray, palette: np.ndarray) -> bytes:
    """Encode ``[H, W]`` uint8 indices as a palette PNG; ``palette`` is ``[K, 3]`` uint8 RGB (K <= 256).

    Entries past ``K`` are black, and index 255 (ignore) gets VOC's ``(224, 224, 192)`` when ``K < 256``.
    """
    if labels.ndim != 2 or labels.dtype != np.uint8:
        raise DataError(f"a palette PNG holds [H, W] uint8 indices, got {labels.dtype} {labels.shape}")
    table = np.zeros((256, 3), np.uint8)
    table[: len(palette)] = palette
    if len(palette) < 256:
        table[IGNORE_INDEX] = (224, 224, 192)  # the colour of VOC's "void" boundaries
    image = Image.frombytes("P", (labels.shape[1], labels.shape[0]), np.ascontiguousarray(labels).tobytes())
    image.putpalette(table.reshape(-1).tolist())
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_palette_png(path: str | os.PathLike, labels: np.ndarray, palette: np.ndarray) -> None:
    """Write ``[H, W]`` uint8 indices as a palette PNG (as VOC's ``SegmentationClass``), atomically."""
    write_bytes_atomic(path, palette_png_bytes(labels, palette))

