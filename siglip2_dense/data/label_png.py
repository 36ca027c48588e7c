"""Label PNGs as mmsegmentation reads them: class indices as stored, palette PNGs included.

mmsegmentation's ``LoadAnnotations`` decodes a segmentation map with mmcv's Pillow backend and
``flag='unchanged'``, which is ``np.array(PIL.Image.open(path))``: for a palette ("P") PNG such as
Pascal VOC's ``SegmentationClass`` that is the palette index of each pixel (the class), never the
colour; for a grey ("L") PNG it is the stored value. :func:`read_label_png` does the same and refuses
anything else (RGB, 16-bit) with a :class:`DataError` instead of returning colours as classes.

:func:`reduce_zero_label` is mmsegmentation's (``LoadAnnotations`` with ``reduce_zero_label=True``):
``0 -> 255``, ``k -> k - 1``, and ``255`` stays ``255`` (ignore stays ignore).

(Kept here because ``image_io.read_label_map`` decodes with OpenCV, which expands palette PNGs to
colours, and ``ade20k.reduce_zero_label`` turns 255 into 254; both are being fixed elsewhere and
will be folded into one place.)
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from siglip2_dense.errors import DataError, MissingFileError
from siglip2_dense.files import write_bytes_atomic
from siglip2_dense.image_input import MAX_IMAGE_PIXELS

IGNORE_INDEX = 255
LABEL_MODES = ("P", "L")


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a palette or grey 8-bit label PNG as ``[H, W]`` uint8 class indices, as stored.

    Raises:
        MissingFileError: no such file. DataError: empty, not an image, truncated, too large,
            or not a single-channel 8-bit (``P`` / ``L``) image.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"label map not found: {path}")
    data = path.read_bytes()
    if not data:
        raise DataError(f"label map {path} is empty (0 bytes); replace it with the file it should hold")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise DataError(f"label map {path} is {width}x{height} pixels, more than the "
                                    f"{MAX_IMAGE_PIXELS} that are decoded")
                if image.mode not in LABEL_MODES:
                    raise DataError(
                        f"label map {path} is a {image.mode} image; expected a single-channel 8-bit PNG "
                        "(mode P with a palette, or L) holding one class index per pixel"
                    )
                labels = np.array(image)
    except DataError:
        raise
    except Exception as error:  # PIL raises many kinds on broken files: name the file and move on
        raise DataError(f"cannot decode label map {path}: {error}; replace it with a complete copy") from None
    return labels.astype(np.uint8, copy=False)


def reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """mmsegmentation's ``reduce_zero_label``: ``0 -> 255``, ``k -> k - 1``, ``255 -> 255``; ``[H, W]`` uint8."""
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

