"""Writers of the bad and unusual files the bad-input corpus (tests/test_bad_inputs.py) feeds the toolkit.

Each writer makes one kind of file in a folder the test owns (``tmp_path``): images cut short, files
that only pretend to be images, images in unusual modes and bit depths, and headers that claim more
pixels than any machine holds.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

EXIF_ORIENTATION_TAG = 0x0112


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image with smooth gradients and some noise, as a photo compresses."""
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 32, size=(height, width, 3))
    base = np.stack([rows * 255 // max(height - 1, 1), cols * 255 // max(width - 1, 1),
                     (rows + cols) * 127 // max(height + width - 2, 1)], axis=-1)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_truncated(path: Path, image: np.ndarray, keep: float = 0.6) -> Path:
    """``image`` encoded in ``path``'s format, then cut after ``keep`` of its bytes (a broken download)."""
    Image.fromarray(image).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width x height`` RGB pixels, followed by almost no pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def write_with_orientation(path: Path, image: np.ndarray, orientation: int) -> Path:
    """``image`` as a lossless PNG whose EXIF orientation tag is ``orientation`` (6: turn 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    Image.fromarray(image).save(path, exif=exif.tobytes())
    return path


def write_cmyk_jpeg(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).convert("CMYK").save(path, quality=95)
    return path


def write_palette_png(path: Path, image: np.ndarray, transparent_index: int | None = None) -> Path:
    """``image`` reduced to a 256-colour palette; ``transparent_index`` marks one palette entry transparent."""
    palette = Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    if transparent_index is None:
        palette.save(path)
    else:
        palette.save(path, transparency=transparent_index)
    return path


def write_sixteen_bit_png(path: Path, values: np.ndarray) -> Path:
    """``[H, W]`` or ``[H, W, 3]`` (RGB order) uint16 values as a 16-bit PNG."""
    if values.ndim == 3:
        values = values[:, :, ::-1]  # OpenCV writes BGR
    cv2.imwrite(str(path), np.ascontiguousarray(values.astype(np.uint16)))
    return path


def write_float_tiff(path: Path, values: np.ndarray) -> Path:
    """``[H, W, 3]`` (RGB order) float32 values as a floating-point TIFF."""
    cv2.imwrite(str(path), np.ascontiguousarray(values[:, :, ::-1].astype(np.float32)))
    return path
