"""Surface-normal data in the generic folder form: images, normal-map PNGs, and optionally depth.

::

    root/<split>/images/   0001.jpg, 0002.png, ...   (any common image format)
    root/<split>/normals/  0001.png, ...             (RGB, n = rgb / 127.5 - 1, (0, 0, 0) = missing;
                                                      :mod:`~siglip2_dense.data.normals_png`)
    root/<split>/depth/    0001.png, ...             (optional: uint16 millimetres, 0 = invalid)

An image, its normals and its depth are matched by file stem; every image needs a normal map, and when a
``depth`` folder exists, a depth map. ``tools/make_synthetic.py --format normals-folder`` writes this form.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from siglip2_dense.data.image_io import IMAGE_SUFFIXES, check_same_size, read_rgb
from siglip2_dense.data.normals_png import read_normals_png
from siglip2_dense.data.nyu import read_depth_png
from siglip2_dense.errors import DataError, MissingFileError

NORMALS_FOLDERS = ("images", "normals", "depth")


class FolderNormalsDataset(Dataset):
    """Images with surface normals (and depth when present), one split of a folder data set.

    Args:
        root: the data set folder (``root/<split>/{images,normals[,depth]}``).
        split: the sub-folder, e.g. ``"train"`` or ``"test"``.
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8 RGB, "normals": [H, W, 3] float32 (zero = missing), "path": str}``,
    plus ``"depth": [H, W] float32 metres`` when the split has a ``depth`` folder.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.root, self.split, self.transform = Path(root), split, transform
        folder = self.root / split
        self.images_dir, self.normals_dir, self.depth_dir = (folder / name for name in NORMALS_FOLDERS)
        for directory in (self.images_dir, self.normals_dir):
            if not directory.is_dir():
                raise MissingFileError(f"normals data folder not found: {directory} (expected "
                                       f"{folder}/images and {folder}/normals)")
        self.has_depth = self.depth_dir.is_dir()
        images = sorted(p for p in self.images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(f"no images in {self.images_dir} (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
        stems = [p.stem for p in images]
        if len(set(stems)) != len(stems):
            raise DataError(f"{self.images_dir} holds two images with the same stem; stems must be unique")
        self.samples = [(p, self.normals_dir / f"{p.stem}.png", self.depth_dir / f"{p.stem}.png") for p in images]
        missing = [n for _, n, _ in self.samples if not n.is_file()]
        if self.has_depth:
            missing += [d for _, _, d in self.samples if not d.is_file()]
        if missing:
            raise MissingFileError(f"{len(missing)} target file(s) missing, e.g. {missing[0]}; every image in "
                                   f"{self.images_dir} needs <stem>.png in normals/ (and depth/ when present)")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_path, normals_path, depth_path = self.samples[index]
        image, normals = read_rgb(image_path), read_normals_png(normals_path)
        item: dict[str, Any] = {"image": image, "normals": normals, "path": str(image_path)}
        if self.has_depth:
            item["depth"] = read_depth_png(depth_path)
        check_same_size(image_path, image, normals_path, normals, "its normals map")
        if self.has_depth:
            check_same_size(image_path, image, depth_path, item["depth"], "its depth map")
        return self.transform(item) if self.transform is not None else item
