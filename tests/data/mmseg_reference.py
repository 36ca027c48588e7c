"""An independent transcription of how mmsegmentation 1.x (mmcv 2.0) loads a segmentation map.

``LoadAnnotations._load_seg_map``: ``mmcv.imfrombytes(bytes, flag='unchanged', backend='pillow')``,
which is ``np.array(PIL.Image.open(...))`` for 8-bit ``P`` / ``L`` PNGs, then ``.squeeze().astype(np.uint8)``;
with ``reduce_zero_label``: ``gt[gt == 0] = 255; gt = gt - 1; gt[gt == 254] = 255``.
Written the mmseg way (uint8 arithmetic, in that order) so that it does not share code with the loaders.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def mmseg_load_seg_map(path, reduce_zero_label: bool = False) -> np.ndarray:
    with Image.open(path) as image:
        gt = np.array(image).squeeze().astype(np.uint8)
    if reduce_zero_label:
        gt[gt == 0] = 255
        gt = gt - 1
        gt[gt == 254] = 255
    return gt


def mmseg_scan(image_dir, image_suffix: str, label_dir, label_suffix: str) -> list[tuple[str, str]]:
    """``BaseSegDataset.load_data_list`` without ``ann_file``: recursive scan, sorted by image path."""
    import os

    pairs = []
    for folder, _, files in os.walk(image_dir):
        for name in files:
            if name.endswith(image_suffix):
                image = os.path.join(folder, name)
                relative = os.path.relpath(image, image_dir)
                label = os.path.join(label_dir, relative.replace(image_suffix, label_suffix))
                pairs.append((image, label))
    return sorted(pairs)
