"""Write synthetic scenes in the layouts of CAT-Seg's preparation scripts: ADE-847 and Pascal Context 459.

Both label maps are 16-bit TIFFs written as CAT-Seg writes them (:func:`~siglip2_dense.data.label_tiff.write_label_tiff`,
``Image.fromarray(uint16)``). Class mapping (synthetic class k -> the value written), spread over the large
label range so that values past 255 (and 255 itself, a class in both) are exercised:

- ``ade847``: ``k -> 50 * k + 5`` (5, 55, ..., 255 for k = 5, ..., 805); as in the real files, where objects
  outside the 847 classes are 65535, a void band of 65535 outlines the shapes (an object pixel with a
  4-neighbour of another class, :func:`~siglip2_dense.data.write_pascal.void_boundary`).
  ``ADE20K_2021_17_01/images_detectron2/validation/ADE_val_<i:08d>.jpg`` and
  ``annotations_detectron2/validation/ADE_val_<i:08d>.tif``; only the evaluation scenes are written, as the
  script fills only ``validation``.
- ``context459``: ``k -> 27 * k + 12`` (12, 39, ..., 255 for k = 9, ..., 444), no ignore pixels (every pixel
  of Pascal Context's full annotation is labelled). ``VOCdevkit/VOC2010/JPEGImages/2008_<i:06d>.jpg`` for every
  scene (JPEGImages holds all of VOC2010), ``annotations_detectron2/pc459_val/2008_<i:06d>.tif`` for the
  evaluation scenes, and ``pascalcontext_val.txt`` (their names, the script's input list).

Reading back (:class:`~siglip2_dense.data.ADE20KFullDataset`, :class:`~siglip2_dense.data.PascalContext459Dataset`)
gives these values, 65535 where ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siglip2_dense.data.image_io import write_rgb
from siglip2_dense.data.label_tiff import WIDE_IGNORE_INDEX, write_label_tiff
from siglip2_dense.data.scene_splits import Size, is_evaluation_scene, iter_scenes
from siglip2_dense.data.write_pascal import void_boundary
from siglip2_dense.files import write_bytes_atomic


def ade847_label(k: int | np.ndarray) -> int | np.ndarray:
    """The ADE-847 class index written for synthetic class ``k``."""
    return 50 * k + 5


def context459_label(k: int | np.ndarray) -> int | np.ndarray:
    """The PC-459 class index written for synthetic class ``k``."""
    return 27 * k + 12


def write_ade847(out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)) -> Path:
    """Write the evaluation scenes among ``num`` as ``out/ADE20K_2021_17_01``; return that folder."""
    root = Path(out) / "ADE20K_2021_17_01"
    for index, scene in iter_scenes(num, seed, size):
        if not is_evaluation_scene(index):
            continue
        stem = f"ADE_val_{index:08d}"
        labels = ade847_label(scene.mask.astype(np.uint16)).astype(np.uint16)
        labels[void_boundary(scene.mask)] = WIDE_IGNORE_INDEX
        write_rgb(root / "images_detectron2" / "validation" / f"{stem}.jpg", scene.image)
        write_label_tiff(root / "annotations_detectron2" / "validation" / f"{stem}.tif", labels)
    return root


def write_context459(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/VOCdevkit/VOC2010`` with ``annotations_detectron2/pc459_val``; return that folder."""
    root = Path(out) / "VOCdevkit" / "VOC2010"
    names = []
    for index, scene in iter_scenes(num, seed, size):
        name = f"2008_{index:06d}"
        write_rgb(root / "JPEGImages" / f"{name}.jpg", scene.image)
        if is_evaluation_scene(index):
            labels = context459_label(scene.mask.astype(np.uint16)).astype(np.uint16)
            write_label_tiff(root / "annotations_detectron2" / "pc459_val" / f"{name}.tif", labels)
            names.append(name)
    write_bytes_atomic(root / "pascalcontext_val.txt", "".join(f"{n}\n" for n in sorted(names)).encode())
    return root
