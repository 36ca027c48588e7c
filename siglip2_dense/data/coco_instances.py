"""COCO-Object route (b): label maps built from COCO's ``instances_<split>.json`` with pycocotools.

::

    coco/
      val2017/<12-digit id>.jpg                    (http://images.cocodataset.org/zips/val2017.zip)
      annotations/instances_val2017.json           (annotations_trainval2017.zip)

Each image's label map starts as background (0); every instance is decoded with pycocotools
(``COCO.annToMask``: polygons, compressed and uncompressed RLE alike) and painted with its class, the
rank of its category id among the 80 COCO thing ids + 1 (the same 1..80 as route (a) and SCLIP's
``COCOObjectDataset``). **Overlap rule**: crowd regions (``iscrowd=1``) first, then the other
instances from the largest to the smallest (pixel count; equal sizes by annotation id), each painting
over what came before, so where instances overlap the smaller one wins (it is usually in front).
``crowd_as_ignore=True`` paints crowd regions 255 instead of their class (non-crowd instances still
paint over them).

Where (a) and (b) can differ on the real data:

- unlabeled pixels: COCO-Stuff's 255 becomes background in (a) (the conversion script's quirk); (b)
  has no notion of "unlabeled" and calls every pixel no instance covers background: the same value.
- overlaps: (a) inherits COCO-Stuff's own rasterisation order of overlapping things, (b) uses the
  rule above; the pixels where two instances overlap can get different classes.
- boundaries: COCO-Stuff rasterised the polygons with its own tools; pycocotools may put an edge
  pixel on the other side.
- crowd regions: labelled with their class in both unless ``crowd_as_ignore``.
Where instances do not overlap and edges agree, (a) and (b) give the same label maps (tested on the
synthetic files).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.coco_object import COCO_OBJECT_PALETTE
from siglip2_dense.data.coco_stuff import NUM_THINGS, STUFFTHINGMAP_VALUES
from siglip2_dense.data.image_io import read_rgb
from siglip2_dense.data.label_png import IGNORE_INDEX
from siglip2_dense.errors import DataError, MissingFileError

COCO_INSTANCES_DOCS = (
    "http://images.cocodataset.org/zips/val2017.zip and "
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip (https://cocodataset.org/#download)"
)
# The 80 COCO thing category ids in label order: stuffthingmaps store category id - 1, and COCO-Stuff's
# first 80 train ids are the things (mmsegmentation's coco_stuff164k.py table).
COCO_THING_CATEGORY_IDS = tuple(raw + 1 for raw in STUFFTHINGMAP_VALUES[:NUM_THINGS])


def instance_label_map(coco: COCO, image_id: int, crowd_as_ignore: bool = False) -> np.ndarray:
    """The COCO-Object label map ``[H, W]`` uint8 of ``image_id`` from a ``pycocotools.coco.COCO``."""
    info = coco.imgs[image_id]
    labels = np.zeros((info["height"], info["width"]), np.uint8)
    painted = []
    for annotation in coco.imgToAnns.get(image_id, []):
        category = annotation["category_id"]
        if category not in COCO_THING_CATEGORY_IDS:
            raise DataError(f"annotation {annotation['id']} of image {image_id} has category_id {category}; "
                            f"COCO thing categories are {COCO_THING_CATEGORY_IDS}")
        mask = coco.annToMask(annotation).astype(bool)
        crowd = bool(annotation.get("iscrowd", 0))
        value = IGNORE_INDEX if crowd and crowd_as_ignore else COCO_THING_CATEGORY_IDS.index(category) + 1
        painted.append(((not crowd, -int(mask.sum()), annotation["id"]), mask, value))
    for _, mask, value in sorted(painted, key=lambda entry: entry[0]):
        labels[mask] = value
    return labels


class COCOObjectInstancesDataset(Dataset):
    """COCO-Object from instance annotations: 81 classes (background + 80 things), no conversion step.

    Args:
        image_dir: the folder of the split's images (``coco/val2017``).
        annotation_file: ``instances_<split>.json``.
        crowd_as_ignore: paint ``iscrowd`` regions 255 instead of their class.
        transform: optional callable applied to each item dict.

    Items (images in file-name order): ``{"image": [H, W, 3] uint8, "mask": [H, W] uint8 (0..80, 255 for
    crowd when asked), "path": str}``.
    """

    class_names = packaged_class_names("coco_object")
    palette = COCO_OBJECT_PALETTE
    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        image_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        crowd_as_ignore: bool = False,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.image_dir, self.annotation_file = Path(image_dir).expanduser(), Path(annotation_file).expanduser()
        for path, what in ((self.image_dir, "image folder"), (self.annotation_file, "annotation file")):
            if not path.exists():
                raise MissingFileError(f"COCO {what} not found: {path}; download: {COCO_INSTANCES_DOCS}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
                self.coco = COCO(str(self.annotation_file))
        except (ValueError, KeyError, TypeError) as error:
            raise DataError(f"{self.annotation_file} is not a COCO instances file: {error!r}") from None
        self.crowd_as_ignore, self.transform = crowd_as_ignore, transform
        self.image_ids = sorted(self.coco.imgs, key=lambda i: self.coco.imgs[i]["file_name"])
        if not self.image_ids:
            raise DataError(f"{self.annotation_file} lists no images")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        image_path = self.image_dir / info["file_name"]
        image = read_rgb(image_path)
        if image.shape[:2] != (info["height"], info["width"]):
            raise DataError(f"image {image_path} is {image.shape[0]}x{image.shape[1]} but {self.annotation_file} "
                            f"says {info['height']}x{info['width']} (height x width)")
        mask = instance_label_map(self.coco, image_id, self.crowd_as_ignore)
        item = {"image": image, "mask": mask, "path": str(image_path)}
        return self.transform(item) if self.transform is not None else item
