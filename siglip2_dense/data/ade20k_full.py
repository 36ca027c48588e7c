"""ADE20K-Full (ADE-847): the 847-class validation set in the layout CAT-Seg's preparation script writes.

::

    ADE20K_2021_17_01/
      images_detectron2/validation/ADE_val_00000001.jpg, ...
      annotations_detectron2/validation/ADE_val_00000001.tif, ...   16-bit TIFF: k = class k (0..846), 65535 = unlabelled

Transcribed from CAT-Seg (github.com/cvlab-kaist/CAT-Seg at 6d3a188): ``datasets/prepare_ade20k_full.py``
reads ``index_ade20k.pkl`` of the ADE20K 2021_17_01 release, decodes each ``*_seg.png`` into object class ids
(``R / 10 * 256 + G``), maps each id in ``ADE20K_SEM_SEG_FULL_CATEGORIES`` to its ``trainId`` (0..846) and
every other pixel to 65535, resizes image and labels so the short side is at most 512 (bilinear / nearest),
and saves ``images_detectron2/<split>/<name>.jpg`` and ``annotations_detectron2/<split>/<name>.tif``
(``Image.fromarray(uint16)``). It fills only ``validation`` (2000 images; its training branch is skipped).
``cat_seg/data/datasets/register_ade20k_847.py`` registers that folder pair (``load_sem_seg``, ``gt_ext="tif"``)
as ``ade20k_full_sem_seg_freq_val_all`` with ``ignore_label=65535``.

The mask keeps the stored values: class indices 0..846 and 65535 (ignore) as uint16
(:mod:`~siglip2_dense.data.label_tiff`); ``ignore_index`` is 65535, since 255 is a class here (``pier``).
Class names: the packaged ``ade20k_full`` file (CAT-Seg's ``datasets/ade847.json``, trainId order).
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

ADE20K_FULL_SPLITS = ("validation",)
ADE20K_FULL_NUM_CLASSES = 847
ADE20K_FULL_DOCS = (
    "the ADE20K 2021_17_01 release from https://groups.csail.mit.edu/vision/datasets/ADE20K/request_data/, "
    "converted with CAT-Seg's datasets/prepare_ade20k_full.py (see CAT-Seg's datasets/README.md, 'ADE20k-847')"
)


class ADE20KFullDataset(WideLabelDataset):
    """ADE-847 validation images and their 847-class label maps.

    Args:
        root: the ``ADE20K_2021_17_01`` folder holding ``images_detectron2`` and ``annotations_detectron2``.
        split: ``"validation"`` (the only split CAT-Seg's script writes).
        transform: optional callable applied to each item dict.

    Items: ``{"image": [H, W, 3] uint8, "mask": [H, W] uint16 (0..846, 65535 = ignore), "path": str}``, sorted
    by image name.
    """

    class_names = packaged_class_names("ade20k_full")
    stored_ignore_values = (WIDE_IGNORE_INDEX,)  # register_ade20k_847.py: ignore_label=65535

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "validation",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        check_split(split, ADE20K_FULL_SPLITS, "ADE20K-Full (ADE-847)")
        self.root, self.split = as_root(root), split
        images, labels = f"images_detectron2/{split}", f"annotations_detectron2/{split}"
        require_folders(self.root, (images, labels), "ADE20K-Full (ADE-847)",
                        "the ADE20K_2021_17_01 folder after CAT-Seg's conversion", ADE20K_FULL_DOCS)
        super().__init__(_pairs(self.root / images, self.root / labels), transform)


def _pairs(image_dir: Path, label_dir: Path) -> list[tuple[Path, Path]]:
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() == ".jpg")
    if not images:
        raise DataError(f"no .jpg images in {image_dir}: the ADE-847 split is empty; {ADE20K_FULL_DOCS}")
    pairs = []
    for image in images:
        label = label_dir / f"{image.stem}.tif"
        if not label.is_file():
            raise MissingFileError(f"image {image} has no label map: expected {label}")
        pairs.append((image, label))
    return pairs
