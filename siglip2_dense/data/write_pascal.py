"""Write synthetic scenes in the Pascal VOC 2012 and Pascal Context (VOC2010) layouts.

Class mapping (synthetic class k -> the value written): ``k -> k`` for both, so background is VOC's /
Context's background (0) and the 16 shapes are the data set's labels 1..16 (VOC: aeroplane ..
pottedplant; Context: aeroplane .. ceiling). Reading back gives the synthetic classes (VOC21,
Context60), or the synthetic class - 1 with background ignored (VOC20, Context59).

- ``voc``: ``VOCdevkit/VOC2012/JPEGImages/2012_<i:06d>.jpg``, ``SegmentationClass/2012_<i:06d>.png``
  (palette PNG with VOC's colour map, as the real files), ``ImageSets/Segmentation/{train,val,trainval}.txt``.
  As in the real annotations, a void band (255) outlines the objects: an object pixel with a
  4-neighbour of another class is written as 255 (:func:`void_boundary`).
  The augmented training set too, as mmsegmentation's ``voc_aug.py`` converter leaves it: every training
  scene with ``i % 4 == 2`` is an "SBD-only" image (in ``aug.txt``, not in ``train.txt``), and every
  training scene gets ``SegmentationClassAug/2012_<i:06d>.png`` (grey 8-bit, no void band, as SBD's
  ``GTcls``), so ``PascalVOCDataset(split="train_aug")`` reads ``train.txt`` + ``aug.txt``.
- ``context``: ``VOCdevkit/VOC2010/JPEGImages/2008_<i:06d>.jpg``, ``SegmentationClassContext/2008_<i:06d>.png``
  (grey 8-bit, as mmsegmentation's Detail-API conversion saves them, no void), and
  ``ImageSets/SegmentationContext/{train,val}.txt`` (sorted names, as the conversion writes them).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.label_png import IGNORE_INDEX, write_palette_png
from siglip2_dense.data.scene_splits import Size, is_evaluation_scene, iter_scenes
from siglip2_dense.data.voc import VOC_PALETTE
from siglip2_dense.files import write_bytes_atomic


def void_boundary(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: object pixels (class > 0) with a 4-neighbour (inside the image) of another class."""
    differs = np.zeros(mask.shape, bool)
    differs[1:] |= mask[1:] != mask[:-1]
    differs[:-1] |= mask[:-1] != mask[1:]
    differs[:, 1:] |= mask[:, 1:] != mask[:, :-1]
    differs[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    return differs & (mask > 0)


def is_sbd_only_scene(index: int) -> bool:
    """A training scene written as an SBD-only image (``aug.txt``, ``SegmentationClassAug`` label only)."""
    return index % 4 == 2


def write_voc(out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)) -> Path:
    """Write ``num`` scenes as ``out/VOCdevkit/VOC2012``; return that folder."""
    root = Path(out) / "VOCdevkit" / "VOC2012"
    names: dict[str, list[str]] = {"train": [], "val": [], "aug": []}
    for index, scene in iter_scenes(num, seed, size):
        name = f"2012_{index:06d}"
        write_rgb(root / "JPEGImages" / f"{name}.jpg", scene.image)
        if is_evaluation_scene(index) or not is_sbd_only_scene(index):
            labels = scene.mask.copy()
            labels[void_boundary(scene.mask)] = IGNORE_INDEX
            write_palette_png(root / "SegmentationClass" / f"{name}.png", labels, VOC_PALETTE)
        if not is_evaluation_scene(index):
            write_png(root / "SegmentationClassAug" / f"{name}.png", scene.mask)
        split = "val" if is_evaluation_scene(index) else "aug" if is_sbd_only_scene(index) else "train"
        names[split].append(name)
    names["trainval"] = sorted(names["train"] + names["val"])
    for split, split_names in names.items():
        _write_lines(root / "ImageSets" / "Segmentation" / f"{split}.txt", split_names)
    return root


def write_context(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/VOCdevkit/VOC2010`` with ``SegmentationClassContext``; return that folder."""
    root = Path(out) / "VOCdevkit" / "VOC2010"
    names: dict[str, list[str]] = {"train": [], "val": []}
    for index, scene in iter_scenes(num, seed, size):
        name = f"2008_{index:06d}"
        write_rgb(root / "JPEGImages" / f"{name}.jpg", scene.image)
        write_png(root / "SegmentationClassContext" / f"{name}.png", scene.mask)
        names["val" if is_evaluation_scene(index) else "train"].append(name)
    for split, split_names in names.items():
        _write_lines(root / "ImageSets" / "SegmentationContext" / f"{split}.txt", sorted(split_names))
    return root


def _write_lines(path: Path, lines: list[str]) -> None:
    write_bytes_atomic(path, "".join(f"{line}\n" for line in lines).encode())
