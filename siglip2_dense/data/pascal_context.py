"""Pascal Context (VOC2010 images, 59 classes + background), as Context60 and Context59.

::

    VOCdevkit/VOC2010/
      JPEGImages/<name>.jpg
      SegmentationClassContext/<name>.png       grey 8-bit: 0 = background, k = class k (1..59)
      ImageSets/SegmentationContext/{train,val}.txt

``SegmentationClassContext`` is what mmsegmentation's ``tools/dataset_converters/pascal_context.py``
writes from the Detail API's ``trainval_merged.json``: each of the 59 kept Detail class ids (plus 0)
is replaced by its rank among them (``np.digitize`` on the sorted ids), so the labels follow the
alphabetical class order below; the 5105 val images (4998 train) are listed in sorted order.

- :class:`PascalContextDataset` (Context60): mmsegmentation's ``PascalContextDataset``,
  ``reduce_zero_label=False``; 60 classes, background = 0.
- :class:`PascalContext59Dataset` (Context59): mmsegmentation's ``PascalContextDataset59``,
  ``reduce_zero_label=True``: background -> 255 (ignored), class k -> k - 1; 59 classes.
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

CONTEXT_SPLITS = ("train", "val")
CONTEXT_DOCS = (
    "VOC2010 images from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ (VOCtrainval_03-May-2010.tar) and "
    "trainval_merged.json from https://codalabuser.blob.core.windows.net/public/trainval_merged.json, converted "
    "with mmsegmentation's tools/dataset_converters/pascal_context.py (needs the Detail API); see mmsegmentation's "
    "docs/en/user_guides/2_dataset_prepare.md, 'Pascal Context'"
)
# mmsegmentation mmseg/datasets/pascal_context.py, PascalContextDataset METAINFO['palette'] (row 0 = background)
CONTEXT_PALETTE = np.array(
    [[120, 120, 120], [180, 120, 120], [6, 230, 230], [80, 50, 50], [4, 200, 3], [120, 120, 80],
     [140, 140, 140], [204, 5, 255], [230, 230, 230], [4, 250, 7], [224, 5, 255], [235, 255, 7],
     [150, 5, 61], [120, 120, 70], [8, 255, 51], [255, 6, 82], [143, 255, 140], [204, 255, 4],
     [255, 51, 7], [204, 70, 3], [0, 102, 200], [61, 230, 250], [255, 6, 51], [11, 102, 255],
     [255, 7, 71], [255, 9, 224], [9, 7, 230], [220, 220, 220], [255, 9, 92], [112, 9, 255],
     [8, 255, 214], [7, 255, 224], [255, 184, 6], [10, 255, 71], [255, 41, 10], [7, 255, 255],
     [224, 255, 8], [102, 8, 255], [255, 61, 6], [255, 194, 7], [255, 122, 8], [0, 255, 20],
     [255, 8, 41], [255, 5, 153], [6, 51, 255], [235, 12, 255], [160, 150, 20], [0, 163, 255],
     [140, 140, 140], [250, 10, 15], [20, 255, 0], [31, 255, 0], [255, 31, 0], [255, 224, 0],
     [153, 255, 0], [0, 0, 255], [255, 71, 0], [0, 235, 255], [0, 173, 255], [31, 0, 255]],
    np.uint8,
)  # fmt: skip
# The Detail API class ids kept by mmsegmentation's converter (its ``_mapping``, sorted there): Context
# label k is the k-th smallest of these, 0 = background.
DETAIL_CLASS_IDS = tuple(sorted((
    0, 2, 259, 260, 415, 324, 9, 258, 144, 18, 19, 22, 23, 397, 25, 284, 158, 159, 416, 33, 162, 420, 454,
    295, 296, 427, 44, 45, 46, 308, 59, 440, 445, 31, 232, 65, 354, 424, 68, 326, 72, 458, 34, 207, 80,
    355, 85, 347, 220, 349, 360, 98, 187, 104, 105, 366, 189, 368, 113, 115,
)))  # fmt: skip


class PascalContextDataset(LabelledImageDataset):
    """Pascal Context with background: 60 classes (Context60).

    Args:
        root: the ``VOCdevkit/VOC2010`` folder holding ``SegmentationClassContext``.
        split: ``"val"`` (5105 images, the benchmark) or ``"train"``.
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (0..59), "path": str}``.
    """

    class_names = packaged_class_names("pascal_context")
    palette = CONTEXT_PALETTE
    num_label_values = 60
    reduces_zero_label = False

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        check_split(split, CONTEXT_SPLITS, "Pascal Context")
        self.root, self.split = as_root(root), split
        split_file = f"ImageSets/SegmentationContext/{split}.txt"
        require_folders(self.root, ("JPEGImages", "SegmentationClassContext", split_file), "Pascal Context",
                        "the VOCdevkit/VOC2010 folder after mmsegmentation's conversion", CONTEXT_DOCS)
        pairs = pairs_from_split_file(self.root / split_file, self.root / "JPEGImages",
                                      self.root / "SegmentationClassContext", ".jpg", ".png")
        super().__init__(pairs, transform)

    def convert_labels(self, labels: np.ndarray, label_path: Path) -> np.ndarray:
        return reduce_zero_label(labels) if self.reduces_zero_label else labels


class PascalContext59Dataset(PascalContextDataset):
    """Pascal Context without background: 59 classes (Context59), background -> 255.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (0..58 = aeroplane..wood, 255), "path": str}``.
    """

    class_names = packaged_class_names("pascal_context")[1:]
    palette = CONTEXT_PALETTE[1:]
    reduces_zero_label = True
