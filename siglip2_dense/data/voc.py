"""Pascal VOC 2012 segmentation, as VOC21 (with background) and VOC20 (background ignored).

::

    VOCdevkit/VOC2012/
      JPEGImages/<name>.jpg
      SegmentationClass/<name>.png              palette PNG: index 0 = background, k = class k, 255 = void
      ImageSets/Segmentation/{train,val,trainval}.txt
      SegmentationClassAug/<name>.png           split "train_aug" only: SBD's labels, grey 8-bit (0..20)
      ImageSets/Segmentation/aug.txt            split "train_aug" only: the SBD images not in VOC train or val

Split ``"train_aug"`` is the augmented training set as mmsegmentation reads it
(open-mmlab/mmsegmentation ``configs/_base_/datasets/pascal_voc12_aug.py``: ``ann_dir=['SegmentationClass',
'SegmentationClassAug']``, ``ann_file=['ImageSets/Segmentation/train.txt', 'ImageSets/Segmentation/aug.txt']``):
VOC's ``train.txt`` with ``SegmentationClass`` labels, then ``aug.txt`` with ``SegmentationClassAug`` labels.
Both files come from mmsegmentation's ``tools/dataset_converters/voc_aug.py`` (SBD ``dataset/cls/*.mat``
``GTcls.Segmentation`` -> ``SegmentationClassAug/<name>.png``; ``aug.txt`` = SBD train + val minus VOC
train and val, 10582 - 1464 = 9118 names; together 10582 images). That converter also writes
``trainaug.txt`` (the 10582 names), read with ``SegmentationClassAug`` alone; the two readings differ only
in which label file a VOC-train image takes, and this class follows the config.

The label PNGs are read as palette indices (mmsegmentation's Pillow decoding), never as colours; 255
marks the void boundaries around objects and is ignored.

- :class:`PascalVOCDataset` (VOC21): mmsegmentation's ``PascalVOCDataset``, ``reduce_zero_label=False``;
  21 classes, background = 0.
- :class:`PascalVOC20Dataset` (VOC20): the SCLIP lineage's ``PascalVOC20Dataset``
  (``custom_datasets.py``), the same files with ``reduce_zero_label=True``: background -> 255
  (ignored), class k -> k - 1, void stays 255; 20 classes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.label_png import reduce_zero_label
from siglip2_dense.data.listed_pairs import (
    LabelledImageDataset,
    as_root,
    check_split,
    pairs_from_split_file,
    require_folders,
)

VOC_SPLITS = ("train", "val", "trainval", "train_aug")
AUG_SPLIT_FILE, AUG_LABEL_DIR = "ImageSets/Segmentation/aug.txt", "SegmentationClassAug"
VOC_DOCS = (
    "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar); see mmsegmentation's "
    "docs/en/user_guides/2_dataset_prepare.md, 'Pascal VOC'"
)
AUG_DOCS = (
    "; the augmented set: SBD (http://home.bharathh.info/pubs/codes/SBD/download.html) converted with "
    "mmsegmentation's tools/dataset_converters/voc_aug.py, which writes SegmentationClassAug/ and aug.txt"
)
# mmsegmentation mmseg/datasets/voc.py, PascalVOCDataset METAINFO['palette'] (the VOC devkit's colour map)
VOC_PALETTE = np.array(
    [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128], [128, 0, 128], [0, 128, 128],
     [128, 128, 128], [64, 0, 0], [192, 0, 0], [64, 128, 0], [192, 128, 0], [64, 0, 128], [192, 0, 128],
     [64, 128, 128], [192, 128, 128], [0, 64, 0], [128, 64, 0], [0, 192, 0], [128, 192, 0], [0, 64, 128]],
    np.uint8,
)  # fmt: skip


class PascalVOCDataset(LabelledImageDataset):
    """Pascal VOC 2012 with background: 21 classes (VOC21).

    Args:
        root: the ``VOCdevkit/VOC2012`` folder.
        split: ``"val"`` (1449 images, the benchmark), ``"train"``, ``"trainval"``, or ``"train_aug"`` (10582
            images: ``train`` plus SBD's ``aug.txt`` with ``SegmentationClassAug`` labels, as mmsegmentation).
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (0..20, 255 = void), "path": str}``.
    """

    class_names = packaged_class_names("voc")
    palette = VOC_PALETTE
    num_label_values = 21
    reduces_zero_label = False

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        check_split(split, VOC_SPLITS, "Pascal VOC")
        self.root, self.split = as_root(root), split
        split_file = f"ImageSets/Segmentation/{'train' if split == 'train_aug' else split}.txt"
        required = ("JPEGImages", "SegmentationClass", split_file)
        if split == "train_aug":
            required += (AUG_LABEL_DIR, AUG_SPLIT_FILE)
        require_folders(self.root, required, "Pascal VOC 2012", "the VOCdevkit/VOC2012 folder"
                        + (" with SBD's SegmentationClassAug and aug.txt" if split == "train_aug" else ""),
                        VOC_DOCS + (AUG_DOCS if split == "train_aug" else ""))
        pairs = pairs_from_split_file(self.root / split_file, self.root / "JPEGImages",
                                      self.root / "SegmentationClass", ".jpg", ".png")
        if split == "train_aug":
            pairs += pairs_from_split_file(self.root / AUG_SPLIT_FILE, self.root / "JPEGImages",
                                           self.root / AUG_LABEL_DIR, ".jpg", ".png")
        super().__init__(pairs, transform)

    def convert_labels(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        return reduce_zero_label(labels) if self.reduces_zero_label else labels


class PascalVOC20Dataset(PascalVOCDataset):
    """Pascal VOC 2012 without background: 20 classes (VOC20), background and void -> 255.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (0..19 = aeroplane..tvmonitor, 255), "path"}``.
    """

    class_names = packaged_class_names("voc")[1:]
    palette = VOC_PALETTE[1:]
    reduces_zero_label = True
