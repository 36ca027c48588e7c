"""Outputs on the padded patch grid -> outputs at the pixels of the images they came from.

NaFlex resizes each image to its grid (``h * p`` by ``w * p`` pixels), so the grid covers the
image exactly: the image's ``[:h, :w]`` cells are resized to the image. FixRes / timm pad the
image right and bottom to whole patches, so the grid covers a little more than the image: the
cells are resized to ``(h * p, w * p)`` pixels and the padding cropped away.

A head may predict finer than the patch grid (DPT at its decoder's resolution, the bins head
with feature upsampling): its ``output_scale`` s says how many cells each patch side has, and the
image's cells are then ``[:s*h, :s*w]``.
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
    output_scale: int = 1,
) -> torch.Tensor:
    """``outputs [B, K, s*Hmax, s*Wmax]`` (image ``b`` in its ``s * grid_sizes[b]`` corner) -> ``[B, K, H, W]``.

    Every image of the batch must be ``image_size = (H, W)`` pixels (training crops, one window).
    ``s = output_scale`` cells per patch side (1: the patch grid). Bilinear, ``align_corners=False``,
    in float32.
    """
    sizes = grid_sizes.tolist()
    height, width = int(image_size[0]), int(image_size[1])
    if any(tuple(s) != tuple(sizes[0]) for s in sizes):
        return torch.cat(
            [outputs_to_pixels(outputs[b : b + 1], grid_sizes[b : b + 1], image_size, patch_size, is_naflex,
                               output_scale)
             for b in range(len(sizes))]
        )
    h, w = sizes[0]
    own = outputs[:, :, : h * output_scale, : w * output_scale].float()
    if is_naflex:
        return F.interpolate(own, size=(height, width), mode="bilinear", align_corners=False)
    if h * patch_size < height or w * patch_size < width:
        raise RequestError(f"a {h}x{w} grid of {patch_size}-pixel patches cannot cover a {height}x{width} image")
    covered = F.interpolate(own, size=(h * patch_size, w * patch_size), mode="bilinear", align_corners=False)
    return covered[:, :, :height, :width]


def heads_output_scale(heads: list[torch.nn.Module] | tuple[torch.nn.Module, ...]) -> int:
    """The cells per patch side of the heads' outputs (their ``output_scale``; 1 for a head without one).

    Raises:
        RequestError: the heads disagree (one grid's outputs are concatenated, so they must not).
    """
    scales = sorted({int(getattr(head, "output_scale", 1)) for head in heads})
    if len(scales) != 1:
        raise RequestError(f"heads predict at different resolutions (output_scale {scales}); one grid needs one")
    return scales[0]


def tensor_to_images(image: torch.Tensor) -> list[np.ndarray]:
    """``[B, 3, H, W]`` float (0..255, possibly resized) or uint8 -> B ``[H, W, 3]`` uint8 arrays."""
    if image.is_floating_point():
        image = image.round().clamp(0, 255)
    return [np.ascontiguousarray(b.to(torch.uint8).permute(1, 2, 0).cpu().numpy()) for b in image]
