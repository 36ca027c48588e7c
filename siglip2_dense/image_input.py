"""Turning what users pass as "an image" into one HxWx3 uint8 RGB array.

Accepted: numpy arrays (HxW grayscale, HxWx1, HxWx3 RGB, HxWx4 RGBA) of any integer or float
dtype, torch tensors in the same HWC layout, and PIL images of any mode. Conversions are
documented and exact:

- grayscale -> the value repeated in three channels; RGBA -> alpha dropped (composited on
  black would invent colours, so the colour channels are kept as they are);
- uint16 / int32 -> divided by 257 (65535 maps to 255) after clipping to [0, 65535];
- float -> values in [0, 1] are scaled by 255, clipped, rounded;
- PIL palette / CMYK / LA / I;16 images -> converted with PIL to RGB (16-bit through the rule
  above), EXIF orientation applied; a PIL image whose file turns out truncated or corrupt when
  its pixels are read raises :class:`DataError` naming the file;
- more than :data:`MAX_IMAGE_PIXELS` pixels in a PIL image -> :class:`RequestError` before any
  pixel is read (image files are refused at the same size, see :mod:`siglip2_dense.data.image_io`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

from siglip2_dense.errors import DataError, RequestError

MAX_IMAGE_PIXELS = 178_956_970
"""The most pixels an image may have: PIL's decompression-bomb limit (2 x ``Image.MAX_IMAGE_PIXELS``)."""


def _pil_to_array(image: Image.Image) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.asarray(image).astype(np.int64)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.array(image)  # a writable copy: PIL's buffer is read-only


def _to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if np.issubdtype(array.dtype, np.integer):
        if array.size and int(array.max()) <= 255 and int(array.min()) >= 0 and array.dtype.itemsize == 1:
            return array.astype(np.uint8)
        clipped = np.clip(array.astype(np.int64), 0, 65535)
        return np.round(clipped / 257.0).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise RequestError(f"{where}: float image holds NaN or inf values; expected finite values in [0, 1]")
        return np.round(np.clip(array.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise RequestError(f"{where}: image dtype {array.dtype} is not supported; expected uint8, uint16 or float")


def to_rgb_uint8(image: Any, where: str = "image") -> np.ndarray:
    """Convert one image to a contiguous ``(H, W, 3)`` uint8 RGB array.

    Args:
        image: numpy array or torch tensor ``(H, W)``, ``(H, W, 1|3|4)``, or a PIL image.
        where: how to name this image in an error message (e.g. ``"images[3]"`` or a path).

    Raises:
        RequestError: the input is not an image (wrong type, wrong number of dimensions or
            channels, empty, non-finite floats).
    """
    if isinstance(image, Image.Image):
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise RequestError(
                f"{where}: {image.width}x{image.height} pixels is more than {MAX_IMAGE_PIXELS}; "
                "downscale the image before passing it"
            )
        try:
            array = _pil_to_array(image)
        except OSError as error:  # PIL decodes lazily: a truncated file fails here
            source = f" (file {image.filename})" if getattr(image, "filename", "") else ""
            raise DataError(f"{where}{source}: cannot read its pixels: {error}; the file is truncated or "
                            "corrupt, replace it with a complete copy") from None
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise RequestError(
            f"{where}: got {type(image).__name__}; expected a numpy array, a torch tensor or a PIL image "
            "laid out HxW or HxWxC"
        )
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise RequestError(
            f"{where}: shape {tuple(array.shape)} is not an image; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise RequestError(f"{where}: shape {tuple(array.shape)} has no pixels")
    array = _to_uint8(array[:, :, :3], where)
    return np.ascontiguousarray(array)
