"""COCO-Stuff 164k (171 classes: 80 things + 91 stuff), converted or in its raw ``stuffthingmaps`` form.

::

    coco_stuff164k/
      images/{train2017,val2017}/<12-digit id>.jpg
      annotations/{train2017,val2017}/<id>_labelTrainIds.png    train ids 0..170, 255 = unlabeled
      annotations/{train2017,val2017}/<id>.png                  raw stuffthingmaps: COCO category id - 1

``label_format="labelTrainIds"`` reads what mmsegmentation's
``tools/dataset_converters/coco_stuff164k.py`` writes (its ``COCOStuffDataset``: suffix
``_labelTrainIds.png``, ``reduce_zero_label=False``). ``label_format="stuffthingmaps"`` reads the
raw PNGs of ``stuffthingmaps_trainval2017.zip`` and maps them in the loader with the converter's
``clsID_to_trID`` table (:data:`STUFFTHINGMAP_VALUES`): raw value ``v`` -> its rank among the 171
used values, 255 stays 255. A raw value outside the table (the 11 unused COCO ids, 182..254) raises
:class:`DataError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.label_png import IGNORE_INDEX
from siglip2_dense.data.listed_pairs import LabelledImageDataset, as_root, pairs_from_scan, require_folders
from siglip2_dense.errors import DataError, RequestError

COCO_STUFF_DOCS = (
    "images from http://images.cocodataset.org/zips/val2017.zip and annotations from "
    "http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/stuffthingmaps_trainval2017.zip, "
    "converted with mmsegmentation's tools/dataset_converters/coco_stuff164k.py; see mmsegmentation's "
    "docs/en/user_guides/2_dataset_prepare.md, 'COCO Stuff 164k'"
)
COCO_SPLITS = ("train2017", "val2017")
STUFF_LABEL_FORMATS = {"labelTrainIds": "_labelTrainIds.png", "stuffthingmaps": ".png"}

# mmsegmentation tools/dataset_converters/coco_stuff164k.py, clsID_to_trID: the raw stuffthingmaps values
# (COCO category id - 1) in train-id order, i.e. STUFFTHINGMAP_VALUES[t] is the raw value of train id t.
# The first 80 are the things (raw 0..89 with COCO's 10 unused ids left out), the other 91 the stuff.
STUFFTHINGMAP_VALUES = (
    *range(0, 11), *range(12, 25), 26, 27, *range(30, 44), *range(45, 65), 66, 69, *range(71, 82),
    *range(83, 90), *range(91, 182),
)  # fmt: skip
NUM_THINGS = 80

# mmsegmentation mmseg/datasets/coco_stuff.py, COCOStuffDataset PALETTE (one row per train id)
COCO_STUFF_PALETTE = np.array(
    [[0, 192, 64], [0, 192, 64], [0, 64, 96], [128, 192, 192], [0, 64, 64], [0, 192, 224], [0, 192, 192],
     [128, 192, 64], [0, 192, 96], [128, 192, 64], [128, 32, 192], [0, 0, 224], [0, 0, 64], [0, 160, 192],
     [128, 0, 96], [128, 0, 192], [0, 32, 192], [128, 128, 224], [0, 0, 192], [128, 160, 192],
     [128, 128, 0], [128, 0, 32], [128, 32, 0], [128, 0, 128], [64, 128, 32], [0, 160, 0], [0, 0, 0],
     [192, 128, 160], [0, 32, 0], [0, 128, 128], [64, 128, 160], [128, 160, 0], [0, 128, 0],
     [192, 128, 32], [128, 96, 128], [0, 0, 128], [64, 0, 32], [0, 224, 128], [128, 0, 0], [192, 0, 160],
     [0, 96, 128], [128, 128, 128], [64, 0, 160], [128, 224, 128], [128, 128, 64], [192, 0, 32],
     [128, 96, 0], [128, 0, 192], [0, 128, 32], [64, 224, 0], [0, 0, 64], [128, 128, 160], [64, 96, 0],
     [0, 128, 192], [0, 128, 160], [192, 224, 0], [0, 128, 64], [128, 128, 32], [192, 32, 128],
     [0, 64, 192], [0, 0, 32], [64, 160, 128], [128, 64, 64], [128, 0, 160], [64, 32, 128],
     [128, 192, 192], [0, 0, 160], [192, 160, 128], [128, 192, 0], [128, 0, 96], [192, 32, 0],
     [128, 64, 128], [64, 128, 96], [64, 160, 0], [0, 64, 0], [192, 128, 224], [64, 32, 0], [0, 192, 128],
     [64, 128, 224], [192, 160, 0], [0, 192, 0], [192, 128, 96], [192, 96, 128], [0, 64, 128], [64, 0, 96],
     [64, 224, 128], [128, 64, 0], [192, 0, 224], [64, 96, 128], [128, 192, 128], [64, 0, 224],
     [192, 224, 128], [128, 192, 64], [192, 0, 96], [192, 96, 0], [128, 64, 192], [0, 128, 96], [0, 224, 0],
     [64, 64, 64], [128, 128, 224], [0, 96, 0], [64, 192, 192], [0, 128, 224], [128, 224, 0], [64, 192, 64],
     [128, 128, 96], [128, 32, 128], [64, 0, 192], [0, 64, 96], [0, 160, 128], [192, 0, 64], [128, 64, 224],
     [0, 32, 128], [192, 128, 192], [0, 64, 224], [128, 160, 128], [192, 128, 0], [128, 64, 32],
     [128, 32, 64], [192, 0, 128], [64, 192, 32], [0, 160, 64], [64, 0, 0], [192, 192, 160], [0, 32, 64],
     [64, 128, 128], [64, 192, 160], [128, 160, 64], [64, 128, 0], [192, 192, 32], [128, 96, 192],
     [64, 0, 128], [64, 64, 32], [0, 224, 192], [192, 0, 0], [192, 64, 160], [0, 96, 192], [192, 128, 128],
     [64, 64, 160], [128, 224, 192], [192, 128, 64], [192, 64, 32], [128, 96, 64], [192, 0, 192],
     [0, 192, 32], [64, 224, 64], [64, 0, 64], [128, 192, 160], [64, 96, 64], [64, 128, 192], [0, 192, 160],
     [192, 224, 64], [64, 128, 64], [128, 192, 32], [192, 32, 192], [64, 64, 192], [0, 64, 32],
     [64, 160, 192], [192, 64, 64], [128, 64, 160], [64, 32, 192], [192, 192, 192], [0, 64, 160],
     [192, 160, 192], [192, 192, 0], [128, 64, 96], [192, 32, 64], [192, 64, 128], [64, 192, 96],
     [64, 160, 64], [64, 64, 0]],
    np.uint8,
)  # fmt: skip

UNMAPPED = 254  # a table entry for raw values the converter does not know (never a train id)


def stuffthingmap_to_train_ids_table() -> np.ndarray:
    """``[256]`` uint8: raw stuffthingmaps value -> train id (255 -> 255, unknown values -> 254)."""
    table = np.full(256, UNMAPPED, np.uint8)
    table[list(STUFFTHINGMAP_VALUES)] = np.arange(len(STUFFTHINGMAP_VALUES), dtype=np.uint8)
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table


def check_coco_split(split: str) -> None:
    if split not in COCO_SPLITS:
        raise RequestError(f"unknown COCO split {split!r}; valid choices: {', '.join(COCO_SPLITS)}")


def check_label_format(label_format: str, formats: dict[str, str]) -> str:
    """The label file suffix of ``label_format``."""
    if label_format not in formats:
        raise RequestError(f"unknown label_format {label_format!r}; valid choices: {', '.join(formats)}")
    return formats[label_format]


def coco_pairs(root, split: str, label_suffix: str, dataset: str, expected: str, docs: str):
    """(image, label) pairs under ``root/images/<split>`` and ``root/annotations/<split>`` (mmseg's scan)."""
    check_coco_split(split)
    require_folders(root, (f"images/{split}", f"annotations/{split}"), dataset, expected, docs)
    return pairs_from_scan(root / "images" / split, root / "annotations" / split, ".jpg", label_suffix)


class COCOStuffDataset(LabelledImageDataset):
    """COCO-Stuff 164k: 171 classes (COCO-Stuff-171).

    Args:
        root: the folder holding ``images/`` and ``annotations/`` (mmsegmentation's ``coco_stuff164k``).
        split: ``"val2017"`` (5000 images, the benchmark) or ``"train2017"``.
        label_format: ``"labelTrainIds"`` (converted) or ``"stuffthingmaps"`` (raw, mapped here).
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (train ids 0..170, 255), "path": str}``.
    """

    class_names = packaged_class_names("coco_stuff")
    palette = COCO_STUFF_PALETTE

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val2017",
        label_format: str = "labelTrainIds",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        suffix = check_label_format(label_format, STUFF_LABEL_FORMATS)
        self.root, self.split, self.label_format = as_root(root), split, label_format
        pairs = coco_pairs(self.root, split, suffix, "COCO-Stuff 164k", "the coco_stuff164k folder", COCO_STUFF_DOCS)
        self.num_label_values = 171 if label_format == "labelTrainIds" else 256
        self._table = stuffthingmap_to_train_ids_table()
        super().__init__(pairs, transform)

    def convert_labels(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        if self.label_format == "labelTrainIds":
            return labels
        train_ids = self._table[labels]
        if (train_ids == UNMAPPED).any():
            bad = int(labels[train_ids == UNMAPPED][0])
            raise DataError(f"raw COCO-Stuff label map {label_path} holds value {bad}, which is no "
                            "COCO category id - 1 that stuffthingmaps use (0..181 without the unused ids, 255)")
        return train_ids
