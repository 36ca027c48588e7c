"""Outputs on the padded patch grid -> outputs at the pixels of the images they came from.

NaFlex resizes each image to its grid (``h * p`` by ``w * p`` pixels), so the grid covers the
image exactly: the image's ``[:h, :w]`` cells are resized to the image. FixRes / timm pad the
image right and bottom to whole patches, so the grid covers a little more than the image: the
cells are resized to ``(h * p, w * p)`` pixels and the padding cropped away.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from siglip2_dense.errors import RequestError


def outputs_to_pixels(
    outputs: torch.Tensor,
    grid_sizes: torch.Tensor,
    image_size: tuple[int, int],
    patch_size: int,
    is_naflex: bool,
) -> torch.Tensor:
    """``outputs [B, K, Hmax, Wmax]`` (image ``b`` in its ``grid_sizes[b] = (h, w)`` corner) -> ``[B, K, H, W]``.

    Every image of the batch must be ``image_size = (H, W)`` pixels (training crops, one window).
    Bilinear, ``align_corners=False``, in float32.
    """
    sizes = grid_sizes.tolist()
    height, width = int(image_size[0]), int(image_size[1])
    if any(tuple(s) != tuple(sizes[0]) for s in sizes):
        return torch.cat(
            [outputs_to_pixels(outputs[b : b + 1], grid_sizes[b : b + 1], image_size, patch_size, is_naflex)
             for b in range(len(sizes))]
        )
    h, w = sizes[0]
    own = outputs[:, :, :h, :w].float()
    if is_naflex:
        return F.interpolate(own, size=(height, width), mode="bilinear", align_corners=False)
    if h * patch_size < height or w * patch_size < width:
        raise RequestError(f"a {h}x{w} grid of {patch_size}-pixel patches cannot cover a {height}x{width} image")
    covered = F.interpolate(own, size=(h * patch_size, w * patch_size), mode="bilinear", align_corners=False)
    return covered[:, :, :height, :width]


def tensor_to_images(image: torch.Tensor) -> list[np.ndarray]:
    """``[B, 3, H, W]`` float (0..255, possibly resized) or uint8 -> B ``[H, W, 3]`` uint8 arrays."""
    if image.is_floating_point():
        image = image.round().clamp(0, 255)
    return [np.ascontiguousarray(b.to(torch.uint8).permute(1, 2, 0).cpu().numpy()) for b in image]
