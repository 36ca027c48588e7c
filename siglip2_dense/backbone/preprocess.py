"""Image preprocessing for SigLIP (FixRes) and SigLIP2 (NaFlex) towers.

Both paths call the checkpoint's own transformers image processor for resizing and
normalisation, so the tensors equal what that processor gives; this module adds what dense
prediction needs on top: batches of different sizes and the per-image patch grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from siglip2_dense.errors import RequestError
from siglip2_dense.image_input import to_rgb_uint8


def images_to_arrays(images: Any) -> list[np.ndarray]:
    """Validate a batch of images and convert each to ``(H, W, 3)`` uint8 RGB."""
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        images = list(images)
    elif not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        images = [images]
    if len(images) == 0:
        raise RequestError("preprocess: got an empty image list; expected at least one image")
    return [to_rgb_uint8(image, where=f"images[{i}]") for i, image in enumerate(images)]


def naflex_inputs(
    processor: Any, arrays: list[np.ndarray], max_num_patches: int | None
) -> dict[str, torch.Tensor]:
    """NaFlex inputs, padded only to the longest image of the batch.

    Returns:
        ``pixel_values [B, N, p*p*3]`` float32, ``pixel_attention_mask [B, N]`` long and
        ``spatial_shapes [B, 2]`` long, with ``N = max_b h_b * w_b`` (the processor pads to
        ``max_num_patches``; the columns past the longest image are all padding and dropped).
    """
    limit = processor.max_num_patches if max_num_patches is None else int(max_num_patches)
    if limit < 1:
        raise RequestError(f"max_num_patches={max_num_patches}: expected a positive number of patches")
    out = processor(
        images=arrays, max_num_patches=limit, input_data_format="channels_last", return_tensors="pt"
    )
    spatial_shapes = out["spatial_shapes"].long()
    longest = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).max())
    return {
        "pixel_values": out["pixel_values"][:, :longest].float(),
        "pixel_attention_mask": out["pixel_attention_mask"][:, :longest].long(),
        "spatial_shapes": spatial_shapes,
    }


def fixres_inputs(
    processor: Any, arrays: list[np.ndarray], patch_size: int, size: int | Sequence[int] | None
) -> dict[str, torch.Tensor]:
    """FixRes inputs: normalised, optionally resized, padded right/bottom to a common grid.

    Args:
        size: ``None`` keeps each image's size; an int or ``(H, W)`` resizes every image to it
            with the processor's own resampling.

    Returns:
        ``pixel_values [B, 3, Hmax, Wmax]`` (Hmax, Wmax multiples of the patch size, padding 0
        after normalisation) and ``spatial_shapes [B, 2]``: each image's grid
        ``(ceil(h / p), ceil(w / p))``; patches outside it are padding.
    """
    kwargs: dict[str, Any] = {"do_resize": False}
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        if height < 1 or width < 1:
            raise RequestError(f"size={size}: expected positive (height, width)")
        kwargs = {"do_resize": True, "size": {"height": int(height), "width": int(width)}}
    tensors = [
        processor(images=array, input_data_format="channels_last", return_tensors="pt", **kwargs)["pixel_values"][0]
        for array in arrays
    ]
    grids = [(math.ceil(t.shape[1] / patch_size), math.ceil(t.shape[2] / patch_size)) for t in tensors]
    height = max(g[0] for g in grids) * patch_size
    width = max(g[1] for g in grids) * patch_size
    batch = torch.zeros(len(tensors), 3, height, width, dtype=torch.float32)
    for i, t in enumerate(tensors):
        batch[i, :, : t.shape[1], : t.shape[2]] = t
    return {"pixel_values": batch, "spatial_shapes": torch.tensor(grids, dtype=torch.long)}
