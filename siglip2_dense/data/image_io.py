"""Reading and writing the image files the data sets are made of.

Everything here works in RGB (OpenCV's BGR order never leaves this file). Writers go through a
temporary file in the same folder and ``os.replace``, so a crash never leaves half a file behind
under the final name.

Reading is OpenCV's, after a look at the file's header (PIL reads only the header): a file of more
than :data:`~siglip2_dense.image_input.MAX_IMAGE_PIXELS` pixels is refused before it is decoded
(a decompression bomb), and a file that cannot be decoded raises :class:`DataError` saying whether it
is empty, not an image, or an image that is truncated or corrupt. :func:`read_rgb` converts pixel
values by the rules of :func:`~siglip2_dense.image_input.to_rgb_uint8` (16-bit / 257, grey to three
channels, alpha dropped); CMYK files go through PIL's conversion. Data sets read pixels as stored:
their label maps are drawn on the stored pixels, so EXIF orientation is applied only on request
(``apply_exif_orientation=True``, for a user's photos, as the command-line tools do). Label maps
(:func:`read_label_map`) are class indices: a palette PNG gives its stored indices (PIL decodes it,
since OpenCV expands a palette into colours), as mmsegmentation reads Pascal VOC's label maps.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from siglip2_dense.errors import DataError, MissingFileError, RequestError
from siglip2_dense.files import write_bytes_atomic
from siglip2_dense.image_input import MAX_IMAGE_PIXELS, to_rgb_uint8

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class ImageHeader:
    """What an image file's header says (read by PIL without decoding the pixels)."""

    format: str
    mode: str
    width: int
    height: int
    orientation: int
    """The EXIF orientation tag, 1 (as stored) to 8."""


def read_rgb(path: str | os.PathLike, apply_exif_orientation: bool = False) -> np.ndarray:
    """Read a colour image file as ``[H, W, 3]`` uint8 RGB.

    Grey images are repeated in three channels, alpha is dropped, 16-bit values are divided by 257
    and float values in [0, 1] scaled by 255 (the rules of :func:`~siglip2_dense.image_input.to_rgb_uint8`);
    CMYK files are converted by PIL.

    Args:
        apply_exif_orientation: turn the pixels as the file's EXIF orientation tag says (a photo as
            a viewer shows it); False keeps them as stored, as a data set's label maps expect.

    Raises:
        MissingFileError: no such file. DataError: the file is empty, not an image, truncated or
            corrupt, larger than ``MAX_IMAGE_PIXELS``, or holds non-finite float values.
    """
    path = Path(path)
    data = _read_bytes(path)
    header = read_header(path, data, with_orientation=apply_exif_orientation)
    rotated = apply_exif_orientation and header is not None and header.orientation != 1
    if header is not None and (header.mode == "CMYK" or rotated):
        return _decode_with_pil(path, data, apply_exif_orientation)
    image = _decode(path, data, header)
    if image.ndim == 3 and image.shape[2] in (3, 4):
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    try:
        return to_rgb_uint8(image, where=f"image {path}")
    except RequestError as error:
        raise DataError(str(error)) from None


PALETTE_MODES = ("P",)  # PIL's mode for an image whose pixels are indices into a colour table


def check_same_size(image_path: str | os.PathLike, image: np.ndarray, other_path: str | os.PathLike,
                    other: np.ndarray, what: str) -> None:
    """Raise :class:`DataError` unless ``other`` ``[H, W(, C)]`` (a label map, depth or normals) has the
    ``H x W`` of ``image`` ``[H, W, 3]``; ``what`` names it in the message (``"its annotation"``, ``"depth"``)."""
    if tuple(other.shape[:2]) != tuple(image.shape[:2]):
        raise DataError(
            f"size mismatch: image {image_path} is {image.shape[0]}x{image.shape[1]} but {what} {other_path} "
            f"is {other.shape[0]}x{other.shape[1]} (height x width); they must be equal"
        )


def read_label_map(path: str | os.PathLike) -> np.ndarray:
    """Read a label map as ``[H, W]`` uint8 class indices, values kept as stored.

    A grey 8-bit PNG holds the indices as its pixel values. A palette PNG (PIL mode ``P``, as
    Pascal VOC's and Pascal Context's ``SegmentationClass`` maps) holds them as indices into its
    colour table: they are returned as they are, never expanded into colours. This is what
    mmsegmentation reads (``LoadAnnotations`` decodes with ``imdecode_backend='pillow'`` and
    ``flag='unchanged'``, and mmcv's ``_pillow2array`` then takes ``np.array(img)``, the palette
    indices), so a grey and a palette PNG of the same labels give the same array.

    Raises:
        MissingFileError: no such file. DataError: the file is not an image, is truncated or
            corrupt, or holds colours or 16-bit values instead of one 8-bit index per pixel.
    """
    path = Path(path)
    data = _read_bytes(path)
    header = read_header(path, data)
    if header is not None and header.mode in PALETTE_MODES:
        labels = _decode_palette_indices(path, data)
    else:
        labels = _decode(path, data, header)
    if labels.ndim != 2 or labels.dtype != np.uint8:
        shape = "x".join(str(s) for s in labels.shape)
        raise DataError(
            f"label map {path} is {labels.dtype} with shape {shape}; "
            "expected a single-channel 8-bit or palette PNG (one class index per pixel)"
        )
    return labels


def _decode_palette_indices(path: Path, data: bytes) -> np.ndarray:
    """The ``[H, W]`` uint8 colour-table indices of a palette image (PIL decodes; OpenCV would expand them)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return np.array(image, dtype=np.uint8)
    except OSError as error:
        raise DataError(f"cannot decode {path}: {error}; replace it with a complete copy") from None


def read_unchanged(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as stored: ``[H, W]`` or ``[H, W, C]``, uint8 or uint16, OpenCV channel order.

    Raises:
        MissingFileError: no such file. DataError: the file is empty, not an image, truncated or
            corrupt, or larger than ``MAX_IMAGE_PIXELS``.
    """
    path = Path(path)
    data = _read_bytes(path)
    return _decode(path, data, read_header(path, data))


def read_header(path: Path, data: bytes, with_orientation: bool = False) -> ImageHeader | None:
    """The header of the image file ``data`` (the bytes of ``path``), or None when PIL does not know the format.

    Raises:
        DataError: the header declares more than ``MAX_IMAGE_PIXELS`` pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                orientation = _exif_orientation(probe) if with_orientation else 1
                header = ImageHeader(str(probe.format), probe.mode, width, height, orientation)
    except Image.DecompressionBombError as error:
        raise DataError(f"image {path} is too large to decode: {error} Downscale it below "
                        f"{MAX_IMAGE_PIXELS} pixels") from None
    except Exception:  # not a format PIL knows, or a header its parser chokes on: OpenCV decides
        return None
    if width * height > MAX_IMAGE_PIXELS:
        raise DataError(f"image {path} is {width}x{height} = {width * height} pixels, more than the "
                        f"{MAX_IMAGE_PIXELS} that are decoded; downscale it")
    return header


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1..8), 1 when it is absent or unreadable (broken metadata never stops a read)."""
    try:
        value = int(image.getexif().get(0x0112, 1))
    except Exception:  # PIL's EXIF parser raises many kinds of error on damaged metadata
        return 1
    return value if 1 <= value <= 8 else 1


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MissingFileError(f"file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise DataError(f"image file {path} is empty (0 bytes); replace it with the image it should hold")
    return data


def _decode(path: Path, data: bytes, header: ImageHeader | None) -> np.ndarray:
    # imdecode(bytes) instead of imread: works with any path characters on every platform
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as error:
        first_line = str(error).strip().splitlines()[-1]
        raise DataError(f"cannot decode {path}: OpenCV refuses it ({first_line})") from None
    if image is None:
        if header is None:
            raise DataError(f"cannot decode {path}: not an image file (it starts with {data[:8]!r}, which no "
                            "image format does); replace it with the image or remove it")
        raise DataError(f"cannot decode {path}: a {header.format} file that is truncated or corrupt "
                        f"({len(data)} bytes); replace it with a complete copy")
    return image


def _decode_with_pil(path: Path, data: bytes, apply_exif_orientation: bool) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if apply_exif_orientation:
                return to_rgb_uint8(image, where=f"image {path}")
            return np.array(image.convert("RGB"))
    except RequestError as error:
        raise DataError(str(error)) from None
    except OSError as error:
        raise DataError(f"cannot decode {path}: {error}; replace it with a complete copy") from None


def write_rgb(path: str | os.PathLike, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write an ``[H, W, 3]`` uint8 RGB image; the suffix of ``path`` picks the format."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(f"cannot write {path}: expected [H, W, 3] uint8 RGB, got {image.dtype} {image.shape}")
    params = _jpeg_params(jpeg_quality) if Path(path).suffix.lower() in (".jpg", ".jpeg") else []
    _write_encoded(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)


def jpeg_decoded(image: np.ndarray, jpeg_quality: int = 95) -> np.ndarray:
    """``[H, W, 3]`` uint8 RGB -> the pixels :func:`read_rgb` gives for it after :func:`write_rgb` to a ``.jpg``."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), _jpeg_params(jpeg_quality))
    if not ok:
        raise DataError(f"OpenCV could not encode a {image.dtype} {image.shape} image as JPEG")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


def _jpeg_params(quality: int) -> list[int]:
    # 4:4:4, no chroma subsampling: small synthetic images keep their colours
    return [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


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
