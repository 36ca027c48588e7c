"""Batching items whose images have different sizes.

Two choices, both for ``torch.utils.data.DataLoader(collate_fn=...)``:

- :func:`collate_as_lists` keeps every value as it is, one list per key -- what ``Backbone.preprocess``
  takes (a list of ``[H, W, 3]`` uint8 arrays).
- :func:`collate_padded` pads to the largest size in the batch, bottom and right, and returns tensors::

      "image":       uint8   [B, 3, Hmax, Wmax]   pad 0
      "mask":        int64   [B, Hm, Wm]          pad ignore_index (255)   (when items have "mask")
      "depth":       float32 [B, Hd, Wd]          pad 0 (= invalid)         (when items have "depth")
      "normals":     float32 [B, Hn, Wn, 3]       pad 0 (= missing)         (when items have "normals")
      "image_size":  int64   [B, 2]               (height, width) of each image before padding
      "target_size": int64   [B, 2]               (height, width) of each mask / depth before padding
      any other key: list, one value per item ("path", "caption", ...)

  Masks and depth are padded on their own grid, which differs from the image's when the eval transform
  resized only the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from siglip2_dense.errors import RequestError


def collate_as_lists(batch: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """``[{k: v}, ...] -> {k: [v, ...]}``, values untouched."""
    if not batch:
        raise RequestError("cannot collate an empty batch")
    return {key: [item[key] for item in batch] for key in batch[0]}


def collate_padded(batch: Sequence[dict[str, Any]], ignore_index: int = 255) -> dict[str, Any]:
    """Pad images, masks and depth maps to the largest in the batch; see the module docstring for the keys."""
    if not batch:
        raise RequestError("cannot collate an empty batch")
    images = [np.asarray(item["image"]) for item in batch]
    out: dict[str, Any] = {
        "image": _pad_stack(images, 0, torch.uint8).permute(0, 3, 1, 2).contiguous(),
        "image_size": torch.tensor([image.shape[:2] for image in images], dtype=torch.long),
    }
    for key, pad, dtype in (("mask", ignore_index, torch.long), ("depth", 0.0, torch.float32),
                             ("normals", 0.0, torch.float32)):
        if key in batch[0]:
            targets = [np.asarray(item[key]) for item in batch]
            out[key] = _pad_stack(targets, pad, dtype)
            out["target_size"] = torch.tensor([target.shape[:2] for target in targets], dtype=torch.long)
    for key in batch[0]:
        if key not in out:
            out[key] = [item[key] for item in batch]
    return out


def _pad_stack(arrays: list[np.ndarray], pad: float, dtype: torch.dtype) -> torch.Tensor:
    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    stacked = torch.full((len(arrays), height, width, *arrays[0].shape[2:]), pad, dtype=dtype)
    for i, array in enumerate(arrays):
        stacked[i, : array.shape[0], : array.shape[1]] = torch.from_numpy(np.ascontiguousarray(array)).to(
            dtype
        )
    return stacked
