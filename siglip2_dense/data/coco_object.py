"""COCO-Object (background + the 80 COCO things), route (a): converted from COCO-Stuff label maps.

The SCLIP lineage (SCLIP, NACLIP, ProxyCLIP; from GroupViT / TCL) builds COCO-Object with
``datasets/cvt_coco_object.py`` from the raw ``stuffthingmaps`` PNGs (``annotations/<split>/<id>.png``,
COCO category id - 1) and writes ``annotations/<split>/<id>_instanceTrainIds.png``; its
``COCOObjectDataset`` reads those with ``reduce_zero_label=False``. The script's table, applied to the
raw values (:func:`stuffthingmap_to_coco_object`):

- a thing (raw value v <= 89, in COCO-Stuff's train-id order) -> its train id + 1, i.e. 1..80;
- every stuff value (91..181) -> 0 (background);
- 255 (unlabeled in COCO-Stuff) -> 0 as well: the script adds 1 to every entry, 255 included, and then
  sets every key above 90 to 0, so unlabeled pixels count as background, not as ignore;
- values the table does not list (COCO's unused ids) are left as they are (they do not occur).

Route (b), built from COCO's instance annotations with pycocotools, is
:class:`~siglip2_dense.data.coco_instances.COCOObjectInstancesDataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.coco_stuff import (
    COCO_STUFF_DOCS,
    COCO_STUFF_PALETTE,
    NUM_THINGS,
    STUFFTHINGMAP_VALUES,
    check_label_format,
    coco_pairs,
)
from siglip2_dense.data.image_io import read_label_map, write_png
from siglip2_dense.data.listed_pairs import LabelledImageDataset, as_root

OBJECT_LABEL_FORMATS = {"instanceTrainIds": "_instanceTrainIds.png", "stuffthingmaps": ".png"}
COCO_OBJECT_DOCS = (
    COCO_STUFF_DOCS + "; then the SCLIP repository's datasets/cvt_coco_object.py "
    "(github.com/wangf3014/SCLIP) writes the *_instanceTrainIds.png files"
)
# SCLIP custom_datasets.py COCOObjectDataset palette: black background, then COCO-Stuff's first 80 rows
COCO_OBJECT_PALETTE = np.concatenate([np.zeros((1, 3), np.uint8), COCO_STUFF_PALETTE[:NUM_THINGS]])


def stuffthingmap_to_coco_object_table() -> np.ndarray:
    """``[256]`` uint8, cvt_coco_object.py's ``clsID_to_trID`` after its ``+1`` / ``k > 90 -> 0`` loop."""
    table = np.arange(256, dtype=np.uint8)  # values the script does not list stay as they are
    for train_id, raw in enumerate(STUFFTHINGMAP_VALUES):
        table[raw] = train_id + 1 if raw <= 90 else 0
    table[255] = 0  # key 255 -> 255 + 1, then "k > 90 -> 0"
    return table


def stuffthingmap_to_coco_object(raw: np.ndarray) -> np.ndarray:
    """Raw stuffthingmaps values ``[H, W]`` uint8 -> COCO-Object labels ``[H, W]`` uint8 (0..80)."""
    return stuffthingmap_to_coco_object_table()[raw]


def convert_coco_object_labels(root: str | os.PathLike, split: str = "val2017") -> list[Path]:
    """Write ``<id>_instanceTrainIds.png`` beside every raw ``annotations/<split>/<id>.png``; return them.

    What cvt_coco_object.py does, without copying the images (``out_dir`` = the COCO-Stuff root).
    """
    root = as_root(root)
    pairs = coco_pairs(root, split, ".png", "COCO-Stuff 164k (raw stuffthingmaps)", "the coco_stuff164k folder",
                       COCO_STUFF_DOCS)
    written = []
    for _, raw_path in pairs:
        out = raw_path.with_name(f"{raw_path.stem}_instanceTrainIds.png")
        write_png(out, stuffthingmap_to_coco_object(read_label_map(raw_path)))
        written.append(out)
    return written


class COCOObjectDataset(LabelledImageDataset):
    """COCO-Object from COCO-Stuff label maps: 81 classes (background + 80 things).

    Args:
        root: the COCO-Stuff 164k folder (``images/``, ``annotations/``).
        split: ``"val2017"`` (the benchmark) or ``"train2017"``.
        label_format: ``"instanceTrainIds"`` (converted by cvt_coco_object.py or
            :func:`convert_coco_object_labels`) or ``"stuffthingmaps"`` (raw, converted here on load).
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (0 = background, 1..80), "path": str}``.
    """

    class_names = packaged_class_names("coco_object")
    palette = COCO_OBJECT_PALETTE

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val2017",
        label_format: str = "instanceTrainIds",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        suffix = check_label_format(label_format, OBJECT_LABEL_FORMATS)
        self.root, self.split, self.label_format = as_root(root), split, label_format
        pairs = coco_pairs(self.root, split, suffix, "COCO-Object", "the coco_stuff164k folder", COCO_OBJECT_DOCS)
        self.num_label_values = NUM_THINGS + 1 if label_format == "instanceTrainIds" else 256
        self._table = stuffthingmap_to_coco_object_table()
        super().__init__(pairs, transform)

    def convert_labels(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        return labels if self.label_format == "instanceTrainIds" else self._table[labels]
