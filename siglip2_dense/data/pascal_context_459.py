"""Pascal Context with all 459 classes (PC-459), in the layout CAT-Seg's preparation script writes.

::

    VOCdevkit/VOC2010/
      JPEGImages/<name>.jpg                                   (all VOC2010 images)
      annotations_detectron2/pc459_val/<name>.tif             16-bit TIFF: k = class k (0..458)

Transcribed from CAT-Seg (github.com/cvlab-kaist/CAT-Seg at 6d3a188): ``datasets/prepare_pascal_context_459.py``
takes each name of ``pascalcontext_val.txt`` (5104 val images) whose ``trainval/<name>.mat`` exists, subtracts 1
from its ``LabelMap`` (labels.txt's 1-based indices, 1 = accordion .. 459 = wool) and saves the result with
``Image.fromarray(mask).save(<name>.tif, "TIFF")``. ``cat_seg/data/datasets/register_pascal_context.py``
registers ``JPEGImages`` with ``annotations_detectron2/pc459_val`` (``load_sem_seg``, ``gt_ext="tif"``: the
label files pick the images) as ``context_459_test_sem_seg`` with ``ignore_label=459``.

Every pixel of Pascal Context's full annotation is labelled (``unknown`` is class 430), so 459 never occurs in
practice; a 0 in a ``LabelMap`` would wrap to 65535 in the uint16 subtraction. Both 459 and 65535 are read as
ignore and returned as 65535 (:mod:`~siglip2_dense.data.label_tiff`: 255 is a class here, ``monkey``).
Class names: the packaged ``pascal_context_459`` file (CAT-Seg's ``datasets/pc459.json``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.label_tiff import WIDE_IGNORE_INDEX, WideLabelDataset
from siglip2_dense.data.listed_pairs import as_root, check_split, require_folders
from siglip2_dense.errors import DataError, MissingFileError

CONTEXT459_SPLITS = ("val",)
CONTEXT459_NUM_CLASSES = 459
CONTEXT459_IGNORE = 459  # register_pascal_context.py: ignore_label=459
CONTEXT459_DOCS = (
    "VOC2010 images (VOCtrainval_03-May-2010.tar) and the full annotation trainval.tar.gz from "
    "https://www.cs.stanford.edu/~roozbeh/pascal-context/, converted with CAT-Seg's "
    "datasets/prepare_pascal_context_459.py (see CAT-Seg's datasets/README.md, 'PASCAL Context')"
)


class PascalContext459Dataset(WideLabelDataset):
    """Pascal Context val images and their 459-class label maps.

    Args:
        root: the ``VOCdevkit/VOC2010`` folder holding ``JPEGImages`` and ``annotations_detectron2/pc459_val``.
        split: ``"val"`` (the only split CAT-Seg's script writes).
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint16 (0..458, 65535 = ignore), "path": str}``, sorted
    by name.
    """

    class_names = packaged_class_names("pascal_context_459")
    stored_ignore_values = (CONTEXT459_IGNORE, WIDE_IGNORE_INDEX)

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "val",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        check_split(split, CONTEXT459_SPLITS, "Pascal Context 459")
        self.root, self.split = as_root(root), split
        labels = f"annotations_detectron2/pc459_{split}"
        require_folders(self.root, ("JPEGImages", labels), "Pascal Context 459",
                        "the VOCdevkit/VOC2010 folder after CAT-Seg's conversion", CONTEXT459_DOCS)
        super().__init__(_pairs(self.root / "JPEGImages", self.root / labels), transform)


def _pairs(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    labels = sorted(p for p in label_dir.iterdir() if p.suffix.lower() == ".tif")
    if not labels:
        raise DataError(f"no .tif label maps in {label_dir}: the PC-459 split is empty; {CONTEXT459_DOCS}")
    pairs = []
    for label in labels:
        image = image_dir / f"{label.stem}.jpg"
        if not image.is_file():
            raise MissingFileError(f"label map {label} has no image: expected {image}")
        pairs.append((image, label))
    return pairs
