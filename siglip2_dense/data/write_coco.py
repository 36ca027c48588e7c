"""Write synthetic scenes in the COCO-Stuff 164k layout, and COCO-Object's two sources.

Class mapping: synthetic background -> COCO-Stuff ``wall-other`` (train id 161, a stuff class, so
COCO-Object calls it background); shape class k (1..16) -> train id k - 1 (``person`` .. ``cat``),
which is COCO-Object class k and COCO category id ``COCO_THING_CATEGORY_IDS[k - 1]``.

- ``cocostuff``: ``images/{train2017,val2017}/<i:012d>.jpg``, the raw stuffthingmaps
  ``annotations/<split>/<i:012d>.png`` (category id - 1) and the converted
  ``annotations/<split>/<i:012d>_labelTrainIds.png``, as a folder is after mmsegmentation's conversion.
- ``cocoobject``: the same, plus ``<i:012d>_instanceTrainIds.png`` written by the SCLIP conversion
  (:func:`~siglip2_dense.data.coco_object.convert_coco_object_labels`, route (a)) and
  ``annotations/instances_<split>.json`` (route (b)): one instance per 8-connected component of each
  shape class, so instances never overlap; the instances of a scene take turns being stored as
  polygons (one pixel-edge rectangle per run of pixels in a row, which pycocotools fills exactly),
  compressed RLE and uncompressed RLE, all with ``iscrowd=0``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.coco_instances import COCO_THING_CATEGORY_IDS
from siglip2_dense.data.coco_object import convert_coco_object_labels
from siglip2_dense.data.coco_stuff import STUFFTHINGMAP_VALUES
from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.scene_splits import Size, is_evaluation_scene, iter_scenes
from siglip2_dense.data.synthetic import NUM_CLASSES
from siglip2_dense.files import write_bytes_atomic

WALL_OTHER_TRAIN_ID = 161  # packaged_class_names("coco_stuff")[161] == "wall-other"
SYNTHETIC_TO_STUFF_TRAIN_ID = np.array([WALL_OTHER_TRAIN_ID, *range(NUM_CLASSES - 1)], np.uint8)
STUFF_TRAIN_ID_TO_RAW = np.array(STUFFTHINGMAP_VALUES, np.uint8)


def _split(index: int) -> str:
    return "val2017" if is_evaluation_scene(index) else "train2017"


def write_cocostuff(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/coco_stuff164k``; return that folder."""
    root = Path(out) / "coco_stuff164k"
    for index, scene in iter_scenes(num, seed, size):
        stem = f"{index:012d}"
        write_rgb(root / "images" / _split(index) / f"{stem}.jpg", scene.image)
        train_ids = SYNTHETIC_TO_STUFF_TRAIN_ID[scene.mask]
        write_png(root / "annotations" / _split(index) / f"{stem}.png", STUFF_TRAIN_ID_TO_RAW[train_ids])
        write_png(root / "annotations" / _split(index) / f"{stem}_labelTrainIds.png", train_ids)
    return root


def write_cocoobject(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write the ``cocostuff`` set plus COCO-Object's ``_instanceTrainIds`` and instances JSON; return the root."""
    root = write_cocostuff(out, num, seed, size)
    documents = {split: _empty_instances_document() for split in ("train2017", "val2017")}
    for index, scene in iter_scenes(num, seed, size):
        document = documents[_split(index)]
        height, width = scene.mask.shape
        document["images"].append({"id": index, "file_name": f"{index:012d}.jpg", "height": height, "width": width})
        for number, (class_index, component) in enumerate(_instances(scene.mask)):
            document["annotations"].append(
                _annotation(len(document["annotations"]) + 1, index, class_index, component, number % 3)
            )
    for split, document in documents.items():
        if document["images"]:
            convert_coco_object_labels(root, split)
        write_bytes_atomic(root / "annotations" / f"instances_{split}.json", json.dumps(document).encode())
    return root


def _empty_instances_document() -> dict[str, Any]:
    names = packaged_class_names("coco_object")[1:]
    categories = [{"id": c, "name": n, "supercategory": "thing"} for c, n in zip(COCO_THING_CATEGORY_IDS, names)]
    return {"info": {"description": "siglip2-dense synthetic scenes"}, "images": [], "annotations": [],
            "categories": categories}


def _instances(mask: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(synthetic class, [H, W] bool)`` for each 8-connected component of each shape class."""
    found = []
    for class_index in range(1, NUM_CLASSES):
        count, components = cv2.connectedComponents((mask == class_index).astype(np.uint8), connectivity=8)
        found += [(class_index, components == number) for number in range(1, count)]
    return found


def _annotation(annotation_id: int, image_id: int, class_index: int, component: np.ndarray, kind: int) -> dict:
    ys, xs = np.nonzero(component)
    x0, y0 = int(xs.min()), int(ys.min())
    bbox = [x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0]
    if kind == 0:
        segmentation: Any = _row_run_polygons(component)
    else:
        rle = mask_utils.encode(np.asfortranarray(component.astype(np.uint8)))
        if kind == 1:
            segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        else:
            segmentation = {"size": rle["size"], "counts": _uncompressed_counts(component)}
    return {"id": annotation_id, "image_id": image_id, "category_id": COCO_THING_CATEGORY_IDS[class_index - 1],
            "segmentation": segmentation, "area": int(component.sum()), "bbox": bbox, "iscrowd": 0}


def _row_run_polygons(component: np.ndarray) -> list[list[float]]:
    """One rectangle polygon ``[x0, y, x1, y, x1, y+1, x0, y+1]`` per run of pixels in a row."""
    polygons = []
    for y in np.unique(np.nonzero(component)[0]):
        row = np.concatenate([[0], component[y].astype(np.int8), [0]])
        starts, ends = np.nonzero(np.diff(row) == 1)[0], np.nonzero(np.diff(row) == -1)[0]
        for x0, x1 in zip(starts, ends):
            polygons.append([float(x0), float(y), float(x1), float(y), float(x1), float(y + 1), float(x0), float(y + 1)])
    return polygons


def _uncompressed_counts(component: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE: run lengths over the column-major pixels, starting with a run of 0s."""
    flat = component.T.reshape(-1).astype(np.int8)
    changes = np.nonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))[0]
    return np.diff(np.concatenate([[0], changes])).tolist()
