"""Reading and writing the image files the data sets are made of.

Everything here works in RGB (OpenCV's BGR order never leaves this file). Writers go through a
temporary file in the same folder and ``os.replace``, so a crash never leaves half a file behind
under the final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from siglip2_dense.errors import DataError, MissingFileError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read a colour image file as ``[H, W, 3]`` uint8 RGB (grey images are expanded to 3 channels)."""
    image = read_unchanged(path)
    if image.dtype != np.uint8:
        raise DataError(f"image {path} has dtype {image.dtype}; expected an 8-bit image")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel 8-bit label PNG as ``[H, W]`` uint8, values kept as stored."""
    labels = read_unchanged(path)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        shape = "x".join(str(s) for s in labels.shape)
        raise DataError(
            f"label map {path} is {labels.dtype} with shape {shape}; "
            "expected a single-channel 8-bit PNG (one class index per pixel)"
        )
    return labels


def read_unchanged(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as stored: ``[H, W]`` or ``[H, W, C]``, uint8 or uint16, OpenCV channel order."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"file not found: {path}")
    # imdecode(fromfile) instead of imread: works with any path characters on every platform.
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"cannot decode {path}: not a readable image file")
    return image


def write_rgb(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an ``[H, W, 3]`` uint8 RGB image; the suffix of ``path`` picks the format."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"cannot write {path}: expected [H, W, 3] uint8 RGB, got {image.dtype} {image.shape}")
    params = []
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        # 4:4:4, no chroma subsampling: small synthetic images keep their colours
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        params += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    _write_encoded(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)


def write_png(path: str | os.PathLike, values: np.ndarray) -> None:
    """Write an ``[H, W]`` uint8 or uint16 array as a lossless single-channel PNG."""
    if values.ndim != 2 or values.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"cannot write {path}: expected [H, W] uint8 or uint16, got {values.dtype} {values.shape}"
        )
    _write_encoded(path, values, [])


def _write_encoded(path: str | os.PathLike, array: np.ndarray, params: list[int]) -> None:
    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix, array, params)
    if not ok:
        raise DataError(f"OpenCV could not encode {path} as {path.suffix}")
    write_bytes_atomic(path, encoded.tobytes())


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``, else removed.

    For writers that want a file name (h5py, scipy.io.savemat) rather than bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
