"""Cityscapes (fine annotations, 19 evaluated classes).

::

    cityscapes/
      leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
      gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png   (from cityscapesscripts)
      gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png        (in gtFine_trainvaltest.zip)

mmsegmentation's ``CityscapesDataset`` reads ``*_gtFine_labelTrainIds.png`` (train ids 0..18, 255 =
ignore), which ``tools/dataset_converters/cityscapes.py`` (cityscapesscripts' ``json2labelImg``) writes.
``label_file="labelIds"`` reads the ``*_gtFine_labelIds.png`` that ship in the download instead and maps
them here with cityscapesscripts' ``labels.py`` table (:data:`LABEL_ID_TO_TRAIN_ID`), so no conversion
is needed; ``"auto"`` takes the train-id files when the first image has one, else the label-id files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.label_png import IGNORE_INDEX, lookup_table
from siglip2_dense.data.listed_pairs import (
    LabelledImageDataset,
    as_root,
    check_split,
    pairs_from_scan,
    require_folders,
)
from siglip2_dense.errors import DataError, RequestError

CITYSCAPES_SPLITS = ("train", "val")
CITYSCAPES_LABEL_FILES = {"labelTrainIds": "_gtFine_labelTrainIds.png", "labelIds": "_gtFine_labelIds.png"}
CITYSCAPES_DOCS = (
    "https://www.cityscapes-dataset.com/downloads/ (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip); "
    "labelTrainIds from mmsegmentation's tools/dataset_converters/cityscapes.py; see mmsegmentation's "
    "docs/en/user_guides/2_dataset_prepare.md, 'Cityscapes'"
)
# cityscapesscripts/helpers/labels.py (mcordts/cityscapesScripts): label id -> train id for the 19 evaluated
# classes; every other id 0..33 (void, parking, rail track, guard rail, bridge, tunnel, polegroup, caravan,
# trailer) has train id 255. License plate (id -1) is never drawn into the labelIds PNGs.
LABEL_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
NUM_LABEL_IDS = 34
# mmsegmentation mmseg/datasets/cityscapes.py, CityscapesDataset METAINFO['palette']
CITYSCAPES_PALETTE = np.array(
    [[128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153], [153, 153, 153],
     [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152], [70, 130, 180], [220, 20, 60],
     [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100], [0, 80, 100], [0, 0, 230], [119, 11, 32]],
    np.uint8,
)  # fmt: skip


class CityscapesDataset(LabelledImageDataset):
    """Cityscapes fine: 19 classes.

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"val"`` (500 images, the benchmark) or ``"train"``.
        label_file: ``"labelTrainIds"``, ``"labelIds"`` (mapped to train ids here) or ``"auto"``.
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (train ids 0..18, 255), "path": str}``.
    """

    class_names = packaged_class_names("cityscapes")
    palette = CITYSCAPES_PALETTE

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        label_file: str = "auto",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        check_split(split, CITYSCAPES_SPLITS, "Cityscapes")
        if label_file not in (*CITYSCAPES_LABEL_FILES, "auto"):
            raise RequestError(f"unknown label_file {label_file!r}; valid choices: labelTrainIds, labelIds, auto")
        self.root, self.split = as_root(root), split
        require_folders(self.root, (f"leftImg8bit/{split}", f"gtFine/{split}"), "Cityscapes",
                        "the cityscapes folder", CITYSCAPES_DOCS)
        image_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        if label_file == "auto":
            label_file = self._detect_label_file(image_dir, label_dir)
        self.label_file = label_file
        self.num_label_values = 19 if label_file == "labelTrainIds" else NUM_LABEL_IDS
        self._table = lookup_table(LABEL_ID_TO_TRAIN_ID, IGNORE_INDEX)
        pairs = pairs_from_scan(image_dir, label_dir, "_leftImg8bit.png", CITYSCAPES_LABEL_FILES[label_file])
        super().__init__(pairs, transform)

    @staticmethod
    def _detect_label_file(image_dir: Path, label_dir: Path) -> str:
        first = next(iter(sorted(image_dir.rglob("*_leftImg8bit.png"))), None)
        if first is None:
            raise DataError(f"no '*_leftImg8bit.png' images under {image_dir}: the split is empty")
        stem = first.relative_to(image_dir).as_posix()[: -len("_leftImg8bit.png")]
        trainids = label_dir / f"{stem}{CITYSCAPES_LABEL_FILES['labelTrainIds']}"
        return "labelTrainIds" if trainids.is_file() else "labelIds"

    def convert_labels(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        return labels if self.label_file == "labelTrainIds" else self._table[labels]
