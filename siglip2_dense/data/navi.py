"""NAVI (Jampani et al., NeurIPS 2023) as the probing lineage reads it: object-centric depth, and normals from depth.

On disk (``navi_v1`` from storage.googleapis.com/gresearch/navi-dataset/; google/navi ``README.md:35-96``)::

    root/<object_id>/multiview-XX-<camera>/   annotations.json, images/000.jpg, depth/000.png, masks/...
    root/<object_id>/wild_set/                the same
    (Probe3D globs ``*/multiview_*``, probe3d ``evals/datasets/navi.py:245``; google/navi's README names the
    folders ``multiview-XX-camera_model``: both spellings are read.)

``annotations.json`` is a list of ``{"filename", "camera": {"q", "t", "focal_length" (pixels of the original
image), "camera_model"}, "image_size": [height, width], "split": "train" | "val", ...}`` (google/navi
``README.md:75-96``).

Depth PNGs are **not** millimetres: they hold an encoded disparity, ``depth = (65535 * 10) / value``
(0 = no depth), decoded by google/navi ``data_util.py:34-61`` (``decode_depth``, ``scale_factor=10``, "Don't
change the scale_factor") and by probe3d ``evals/datasets/utils.py:241-250`` (``read_depth``), in millimetres
(probe3d ``navi.py:153-154`` divides by 1000 "from millimeter to meters"). Depth is on the object only.

What Probe3D does, and this class with it (probe3d @a1f14640 ``evals/datasets/navi.py``, ``utils.py``):

- splits (``navi.py:59-73,277-333``): ``trainval`` = every multiview collection, ``train`` / ``valid`` = the
  first ``int(0.9 * n)`` / the other multiview collections of an object, ``test`` = the ``wild_set``;
  objects without a ``wild_set`` or with a single collection are skipped; then every 4th image
  (``self.instances[::4]``, ``navi.py:111``). Probe3D lists collections and images in file-system order
  (``glob`` / ``os.listdir``, unsorted), so its exact subset is not reproducible; here both are sorted.
  Image ids are the ``images/*.jpg`` stems without ``_`` (``navi.py:254-257``);
- the image read is ``images/downsampled_<id>.jpg`` (Probe3D's ``resize_navi.py``: short side 1024,
  bicubic; depth nearest) when present, else ``images/<id>.jpg``; EXIF orientation applied;
- image and depth resized to short side 512, nearest (``get_navi_transforms``, ``utils.py:54-71``), then cut
  to a square around the pixels with depth (``bbox_crop``, ``utils.py:253-282``), normals computed there
  (``compute_normal(depth, fx)``, ``utils.py:189-228``, with ``fx = focal_length * 512-side / original
  short side``, ``navi.py:159-162``, and no principal-point offset), then all resized to 512 x 512, nearest
  (``A.Resize(512, 512, interpolation=0)``), and depth below the image's smallest original depth set to 0.

Normals convention: Probe3D's ``compute_normal`` gives a plane facing the camera ``+z`` (pointing away from
the camera, x right, y down, z forward). The toolkit's normals face the camera (the synthetic world's wall is
``(0, 0, -1)``), so :func:`probe3d_normals` returns Probe3D's vectors negated; angular errors are unchanged
when prediction and ground truth share the convention. Border pixels and pixels without depth get 0 (missing).

Not established here: whether NAVI's rendered depth is z-depth or range (Probe3D treats it as z-depth);
the sorted order above versus Probe3D's file-system order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from siglip2_dense.data.image_io import check_same_size, read_unchanged
from siglip2_dense.errors import DataError, MissingFileError, RequestError
from siglip2_dense.files import read_json

NAVI_SPLITS = ("train", "valid", "trainval", "test")
DEPTH_SCALE = 65535 * 10.0  # google/navi data_util.py:45-49: disparity = value / (65535 * 10); depth = 1 / disparity
MILLIMETRES_PER_METRE = 1000.0
PROBE_SIZE = 512  # probe3d navi.py:91 image_size = (512, 512)
EVERY = 4  # probe3d navi.py:111 self.instances = self.instances[::4]
TRAIN_FRACTION = 0.9  # probe3d navi.py:316 train_split = int(0.9 * len(scenes))
MISSING_DEPTH = 1e6  # probe3d utils.py:204 depth[depth == 0] = 1e6
DOWNSAMPLED_PREFIX = "downsampled_"  # probe3d resize_navi.py:56 and navi.py:144


def decode_navi_depth(values: np.ndarray) -> np.ndarray:
    """NAVI's uint16 depth PNG values -> ``[H, W]`` float32 metres (0 stays 0 = no depth)."""
    values = values.astype(np.float64)
    with np.errstate(divide="ignore"):
        millimetres = np.where(values > 0, DEPTH_SCALE / np.maximum(values, 1), 0.0)
    return (millimetres / MILLIMETRES_PER_METRE).astype(np.float32)


def encode_navi_depth(metres: np.ndarray) -> np.ndarray:
    """``[H, W]`` metres -> NAVI's uint16 encoding (0 where no depth); the inverse of :func:`decode_navi_depth`."""
    millimetres = np.asarray(metres, np.float64) * MILLIMETRES_PER_METRE
    with np.errstate(divide="ignore"):
        values = np.where(millimetres > 0, np.round(DEPTH_SCALE / np.maximum(millimetres, 1e-9)), 0)
    if (values > np.iinfo(np.uint16).max).any():
        raise RequestError("NAVI's depth encoding cannot hold depths under 10 mm (65535 * 10 / value)")
    return values.astype(np.uint16)


def probe3d_normals(depth: np.ndarray, focal: float) -> np.ndarray:
    """Probe3D's ``compute_normal(depth, focal)`` (utils.py:189-228), negated to face the camera.

    ``depth [H, W]`` metres (0 = none) -> ``[H, W, 3]`` float32 unit normals (x right, y down, z forward),
    0 on the border and where depth is 0. Points are ``K^-1 [u d, v d, d]`` with ``u, v`` the pixel centres
    (0.5 .. W - 0.5) and ``K = diag(f, f, 1)`` (no principal point, as Probe3D); each normal is the mean of
    the four cross products of the neighbour differences (left x top, top x right, right x bottom, bottom x
    left), L2-normalised; missing depth counts as 1e6 m in those differences.
    """
    height, width = depth.shape
    mask = depth > 0
    d = np.where(mask, depth, MISSING_DEPTH).astype(np.float32)
    u = np.linspace(0.5, width - 0.5, width, dtype=np.float32)[None, :]
    v = np.linspace(0.5, height - 0.5, height, dtype=np.float32)[:, None]
    xyz = torch.from_numpy(np.stack([u * d / focal, v * d / focal, d]))  # [3, H, W]
    centre = xyz[:, 1:-1, 1:-1]
    left, top = xyz[:, 1:-1, :-2] - centre, xyz[:, :-2, 1:-1] - centre
    right, bottom = xyz[:, 1:-1, 2:] - centre, xyz[:, 2:, 1:-1] - centre
    summed = (torch.linalg.cross(left, top, dim=0) + torch.linalg.cross(top, right, dim=0)
              + torch.linalg.cross(right, bottom, dim=0) + torch.linalg.cross(bottom, left, dim=0)) / 4.0
    normal = torch.zeros_like(xyz)
    normal[:, 1:-1, 1:-1] = summed
    normal = F.normalize(normal, p=2, dim=0) * torch.from_numpy(mask.astype(np.float32))
    return np.ascontiguousarray(-normal.permute(1, 2, 0).numpy(), dtype=np.float32) + np.float32(0.0)


def square_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Probe3D's ``bbox_crop`` (utils.py:253-282): ``(top, left, bottom, right)`` of a square around ``mask``.

    Side = the larger side of the box from the first to the last masked row / column (``max - min``, as
    Probe3D), centred on it; moved to the far corner clipped at 0 when it would leave the image.
    """
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise DataError("a NAVI depth map with no depth: nothing to crop around")
    tl = np.array([rows.min(), cols.min()])
    box = np.array([rows.max(), cols.max()]) - tl
    side = int(box.max())
    if side > min(mask.shape):
        raise DataError(f"the object spans {box.tolist()} pixels; a square crop cannot fit a {mask.shape} image")
    start = tl - (side - box) // 2
    if (start >= 0).all() and (start + side <= np.array(mask.shape)).all():
        return int(start[0]), int(start[1]), int(start[0]) + side, int(start[1]) + side
    far = np.clip(tl - (side - box), 0, None)
    return int(far[0]), int(far[1]), int(far[0]) + side, int(far[1]) + side


def _resize_short_side_nearest(array: np.ndarray, size: int) -> np.ndarray:
    """torchvision ``Resize(size, NEAREST)`` on ``[H, W(, C)]``: short side -> size, long = int(size * long / short)."""
    height, width = array.shape[:2]
    if height <= width:
        new = (size, int(size * width / height))
    else:
        new = (int(size * height / width), size)
    tensor = torch.from_numpy(np.array(array, copy=True)).float()
    tensor = tensor[None, None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=new, mode="nearest")[0]
    out = out[0] if array.ndim == 2 else out.permute(1, 2, 0)
    return out.numpy().astype(array.dtype)


class NAVIDataset(Dataset):
    """NAVI images with metric depth and normals from depth, one Probe3D split.

    Args:
        root: the ``navi_v1`` folder (one sub-folder per object).
        split: ``"trainval"`` (Probe3D trains on it), ``"test"`` (the wild sets, Probe3D's test), ``"train"``,
            ``"valid"``.
        transform: optional callable applied to each item dict.

    Items: ``{"image": [512, 512, 3] uint8, "depth": [512, 512] float32 metres (0 = none), "normals":
    [512, 512, 3] float32 (facing the camera, 0 = missing), "focal": float (pixels, at 512), "path": str}``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if split not in NAVI_SPLITS:
            raise RequestError(f"unknown NAVI split {split!r}; valid choices: {', '.join(NAVI_SPLITS)}")
        self.root, self.split, self.transform = Path(root), split, transform
        if not self.root.is_dir():
            raise MissingFileError(f"NAVI folder not found: {self.root} (expected navi_v1 with one folder per "
                                   "object, from storage.googleapis.com/gresearch/navi-dataset/)")
        self.samples: list[tuple[Path, str, dict[str, Any]]] = []
        for obj in sorted(p for p in self.root.iterdir() if p.is_dir()):
            collections = sorted(p for p in obj.iterdir() if p.is_dir() and
                                 (p.name == "wild_set" or p.name.startswith(("multiview-", "multiview_"))))
            if not any(c.name == "wild_set" for c in collections) or len(collections) == 1:
                continue  # probe3d navi.py:292-294
            multiview = [c for c in collections if c.name != "wild_set"]
            cut = int(TRAIN_FRACTION * len(multiview))
            chosen = {"test": [c for c in collections if c.name == "wild_set"], "trainval": multiview,
                      "train": multiview[:cut], "valid": multiview[cut:]}[split]
            for collection in chosen:
                self.samples += _collection_samples(collection)
        self.samples = self.samples[::EVERY]
        if not self.samples:
            raise DataError(f"NAVI split {split!r} under {self.root} is empty: no object folder holds a wild_set "
                            "and a multiview-XX collection with images/*.jpg and annotations.json")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        collection, image_id, annotation = self.samples[index]
        image_path = _prefer_downsampled(collection / "images", image_id, ".jpg")
        depth_path = _prefer_downsampled(collection / "depth", image_id, ".png")
        with Image.open(image_path) as opened:
            image = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
        values = read_unchanged(depth_path)
        if values.ndim != 2 or values.dtype != np.uint16:
            raise DataError(f"NAVI depth {depth_path} is {values.dtype} {values.shape}; expected a 16-bit "
                            "single-channel PNG (encoded disparity, google/navi data_util.py decode_depth)")
        depth = decode_navi_depth(values)
        check_same_size(image_path, image, depth_path, depth, "depth")
        positive = depth[depth > 0]
        if positive.size == 0:
            raise DataError(f"NAVI depth {depth_path} has no pixel with depth")
        min_depth = float(positive.min())
        image, depth = _resize_short_side_nearest(image, PROBE_SIZE), _resize_short_side_nearest(depth, PROBE_SIZE)
        original_short = min(int(v) for v in annotation["image_size"])
        focal = float(annotation["camera"]["focal_length"]) * min(depth.shape) / original_short  # navi.py:161-162
        top, left, bottom, right = square_box(depth > 0)
        image, depth = image[top:bottom, left:right], depth[top:bottom, left:right]
        normals = probe3d_normals(depth, focal)
        side = depth.shape[0]
        resize = (PROBE_SIZE, PROBE_SIZE)
        image = cv2.resize(image, resize, interpolation=cv2.INTER_NEAREST)
        depth = cv2.resize(depth, resize, interpolation=cv2.INTER_NEAREST)
        normals = cv2.resize(normals, resize, interpolation=cv2.INTER_NEAREST)
        depth[depth < min_depth] = 0  # probe3d navi.py:203
        item = {"image": np.ascontiguousarray(image), "depth": depth.astype(np.float32),
                "normals": normals.astype(np.float32), "focal": focal * PROBE_SIZE / side,
                "path": str(image_path)}
        return self.transform(item) if self.transform is not None else item


def _prefer_downsampled(folder: Path, image_id: str, suffix: str) -> Path:
    downsampled = folder / f"{DOWNSAMPLED_PREFIX}{image_id}{suffix}"
    path = downsampled if downsampled.is_file() else folder / f"{image_id}{suffix}"
    if not path.is_file():
        raise MissingFileError(f"NAVI file not found: {path}")
    return path


def _collection_samples(collection: Path) -> list[tuple[Path, str, dict[str, Any]]]:
    images = collection / "images"
    annotations_file = collection / "annotations.json"
    if not images.is_dir() or not annotations_file.is_file():
        raise MissingFileError(f"NAVI collection {collection} lacks images/ or annotations.json")
    ids = sorted(p.stem for p in images.glob("*.jpg") if "_" not in p.stem)  # probe3d navi.py:254-257
    entries = read_json(annotations_file)
    if not isinstance(entries, list):
        raise DataError(f"{annotations_file}: expected a list of per-image annotations (google/navi README)")
    by_id = {}
    for entry in entries:
        try:
            by_id[str(entry["filename"]).split(".")[0]] = entry
            float(entry["camera"]["focal_length"])
            if len(entry["image_size"]) != 2:
                raise ValueError
        except (KeyError, TypeError, ValueError) as error:
            raise DataError(f"{annotations_file}: an entry lacks filename, camera.focal_length or a [height, "
                            f"width] image_size: {entry!r}") from error
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise DataError(f"{annotations_file} has no entry for image {missing[0]}.jpg")
    return [(collection, i, by_id[i]) for i in ids]
