"""Write synthetic scenes in the Cityscapes layout.

Class mapping: synthetic class k -> Cityscapes train id k (background -> road, the 16 shapes ->
sidewalk .. train); the ``*_gtFine_labelIds.png`` beside each train-id file holds the cityscapesscripts
label id of that train id (road 7, sidewalk 8, building 11, ...), as both files are after conversion.

``leftImg8bit/{train,val}/<city>/<city>_000000_<i:06d>_leftImg8bit.png`` (8-bit RGB PNG) and
``gtFine/{train,val}/<city>/<city>_000000_<i:06d>_gtFine_{labelTrainIds,labelIds}.png``; validation
scenes are spread over ``frankfurt``, ``lindau`` and ``munster`` (the real val cities), training scenes
live in ``aachen``.

Pixels: the real ``leftImg8bit`` files are lossless PNGs, and so are these, but what they store is the
scene after a JPEG round trip (:func:`~siglip2_dense.data.image_io.jpeg_decoded`, the encoder and settings of
every JPEG layout): the ADE20K, VOC, Context and COCO writers store JPEGs, so every layout then holds the
same decoded pixels, and a figure that differs between layouts of the same scenes is the labels' doing,
never compression's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from siglip2_dense.data.cityscapes import LABEL_ID_TO_TRAIN_ID
from siglip2_dense.data.image_io import jpeg_decoded, write_png, write_rgb
from siglip2_dense.data.scene_splits import Size, is_evaluation_scene, iter_scenes

VAL_CITIES = ("frankfurt", "lindau", "munster")
TRAIN_ID_TO_LABEL_ID = np.zeros(19, np.uint8)
for _label_id, _train_id in LABEL_ID_TO_TRAIN_ID.items():
    TRAIN_ID_TO_LABEL_ID[_train_id] = _label_id


def write_cityscapes(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/cityscapes``; return that folder."""
    root = Path(out) / "cityscapes"
    for index, scene in iter_scenes(num, seed, size):
        split = "val" if is_evaluation_scene(index) else "train"
        city = VAL_CITIES[(index // 4) % len(VAL_CITIES)] if split == "val" else "aachen"
        stem = f"{city}/{city}_000000_{index:06d}"
        write_rgb(root / "leftImg8bit" / split / f"{stem}_leftImg8bit.png", jpeg_decoded(scene.image))
        write_png(root / "gtFine" / split / f"{stem}_gtFine_labelTrainIds.png", scene.mask)
        write_png(root / "gtFine" / split / f"{stem}_gtFine_labelIds.png", TRAIN_ID_TO_LABEL_ID[scene.mask])
    return root
