"""Each benchmark layout's labels written from the ADE20K layout's, for "the same mIoU in every format".

The synthetic world written in every layout holds the same scenes and (Cityscapes' PNGs included) the
same pixels; the layouts differ in their labels. The mapping from a scene's synthetic classes (what the
ADE20K layout gives back) to each benchmark's labels is typed here from the writers' docstrings, not
imported: ``write_pascal.py`` (VOC: k -> k, a void band of 255 on object pixels with a 4-neighbour of
another class; VOC20 / Context59 read back k - 1 with background ignored), ``write_coco.py``
(COCO-Stuff: background -> wall-other 161, shape k -> k - 1; COCO-Object: k -> k),
``write_cityscapes.py`` (k -> k), ``write_pascal.py`` Context60 (k -> k), ``write_catseg.py`` (ADE-847:
k -> 50 k + 5 with a void band of 65535; PC-459: k -> 27 k + 12). ADE-847's and PC-459's labels reach past
255 (255 is a class of both), so their relabelled masks are uint16 with 65535 as the ignore value.

:func:`ade20k_counterpart` scores the ADE20K-layout images with a benchmark's labels and vocabulary,
so that benchmark's figure has a counterpart that differs from it only in where the files came from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.openvocab import benchmark_table as table

IGNORE = 255
WIDE_IGNORE = 65535  # ADE-847 / PC-459 masks
WALL_OTHER = 161  # COCO-Stuff-171 train id of "wall-other"


def void_band(mask: np.ndarray) -> np.ndarray:
    """``[H, W]`` bool: object pixels (class > 0) with a 4-neighbour inside the image of another class."""
    band = np.zeros(mask.shape, bool)
    padded = np.pad(mask, 1, mode="edge")
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        band |= padded[dy : dy + mask.shape[0], dx : dx + mask.shape[1]] != mask
    return band & (mask > 0)


def _shift_without_background(mask: np.ndarray) -> np.ndarray:
    out = mask.astype(np.int64) - 1
    out[mask == 0] = IGNORE
    return out


def _voc21(mask: np.ndarray) -> np.ndarray:
    out = mask.astype(np.int64)
    out[void_band(mask)] = IGNORE
    return out


def _voc20(mask: np.ndarray) -> np.ndarray:
    out = _shift_without_background(mask)
    out[void_band(mask)] = IGNORE
    return out


def _coco_stuff(mask: np.ndarray) -> np.ndarray:
    out = mask.astype(np.int64) - 1
    out[mask == 0] = WALL_OTHER
    return out


def _same(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.int64)


def _ade847(mask: np.ndarray) -> np.ndarray:
    out = 50 * mask.astype(np.int64) + 5
    out[void_band(mask)] = WIDE_IGNORE
    return out


def _context459(mask: np.ndarray) -> np.ndarray:
    return 27 * mask.astype(np.int64) + 12


# synthetic classes [H, W] -> the benchmark's labels [H, W] (255 ignored)
LABELS_FROM_SYNTHETIC: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "voc21": _voc21, "voc20": _voc20, "context60": _same, "context59": _shift_without_background,
    "coco_object": _same, "coco_stuff": _coco_stuff, "cityscapes": _same, "ade20k": _same,
    "ade847": _ade847, "context459": _context459,
}  # fmt: skip
WIDE = ("ade847", "context459")


def as_labelled_by(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An item transform: an ADE20K-layout item's mask (synthetic classes) relabelled as benchmark ``name``'s."""
    mapping = LABELS_FROM_SYNTHETIC[name]

    def transform(item: dict[str, Any]) -> dict[str, Any]:
        return {**item, "mask": mapping(np.asarray(item["mask"])).astype(np.uint16 if name in WIDE else np.uint8)}

    return transform


def ade20k_counterpart(segmenter: Any, data_root: Path, name: str, **protocol: Any) -> dict[str, Any]:
    """The harness's figure for benchmark ``name`` computed on the ADE20K-layout files under ``data_root``:
    ``name``'s synthetic vocabulary and labels, no background threshold, ``protocol`` (short side, window,
    stride) as the run it is compared with."""
    return table.run_benchmark(segmenter, "ade20k", data_root / table.DATA_FOLDERS["ade20k"],
                               table.synthetic_vocabulary(name), None, transform=as_labelled_by(name),
                               ignore_index=WIDE_IGNORE if name in WIDE else IGNORE, **protocol)
