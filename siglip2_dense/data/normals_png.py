"""Surface normals as RGB PNGs (the generic folder form): ``n = rgb / 127.5 - 1``, ``(0, 0, 0)`` = missing.

Each component ``[-1, 1]`` maps to ``round((n + 1) * 127.5)`` in ``0..255`` (the Omnidata / Taskonomy style
encoding; 8 bits give about 0.45 degrees of resolution). A pixel whose three channels are all 0 has no normal
and reads back as the zero vector, which the losses and ``NormalsEvaluator`` skip; no unit vector encodes to
it (that would need every component below -0.996). The frame is whatever the data set's is; the synthetic
world and the transforms here use the camera frame x right, y down, z forward, normals facing the camera.
"""

from __future__ import annotations

import os

import numpy as np

from siglip2_dense.data.image_io import read_rgb, write_rgb
from siglip2_dense.errors import DataError


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` float normals (zero = missing) -> ``[H, W, 3]`` uint8 RGB, missing pixels ``(0, 0, 0)``."""
    if normals.ndim != 3 or normals.shape[2] != 3:
        raise DataError(f"expected normals [H, W, 3], got shape {normals.shape}")
    normals = np.asarray(normals, dtype=np.float64)
    encoded = np.clip(np.round((normals + 1.0) * 127.5), 0, 255).astype(np.uint8)
    encoded[~np.any(normals != 0, axis=-1)] = 0
    return encoded


def decode_normals(rgb: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> ``[H, W, 3]`` float32 ``rgb / 127.5 - 1``; all-zero pixels -> the zero vector."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DataError(f"expected an [H, W, 3] uint8 normal image, got {rgb.dtype} {rgb.shape}")
    normals = rgb.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    normals[~np.any(rgb != 0, axis=-1)] = 0.0
    return normals


def read_normals_png(path: str | os.PathLike) -> np.ndarray:
    """Read a normal-map PNG as ``[H, W, 3]`` float32 (see the module docstring for the encoding)."""
    return decode_normals(read_rgb(path))


def write_normals_png(path: str | os.PathLike, normals: np.ndarray) -> None:
    """Write ``[H, W, 3]`` float normals (zero = missing) as an RGB PNG, atomically."""
    write_rgb(path, encode_normals(normals))
