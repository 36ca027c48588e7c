"""Operations on padded feature grids that keep the padding out of the real cells.

Every image of a batch sits in the top-left corner of the padded grid, ``(h_b, w_b)`` cells of
``(Hmax, Wmax)``. An operation is *padding-safe* when the real cells of its output equal what
the image alone (an ``(h_b, w_b)`` input) would give. Two rules get there:

- before a convolution with spatial extent, the padding is set to zero, which is exactly the
  zero padding the convolution applies at the border of an image alone;
- before bilinear upsampling, the padding is set to the nearest real cell, which is exactly the
  edge clamping ``F.interpolate`` applies at the border of an image alone. Resampling uses
  integer factors (``scale_factor=2``, ``align_corners=False``), so the sampling positions do
  not depend on the size of the padded canvas.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siglip2_dense.backbone.features import grid_mask


def grid_sizes_at(grid_sizes: torch.Tensor, up: int = 1, down: int = 1) -> torch.Tensor:
    """Each image's ``(h, w)`` after resampling by ``up / down``: ``ceil(h * up / down)``.

    ``down=2`` matches a stride-2 convolution with kernel 3 and padding 1 (``ceil(h / 2)`` cells).
    """
    return -(-(grid_sizes.long() * up) // down)


def mask_like(x: torch.Tensor, grid_sizes: torch.Tensor) -> torch.Tensor:
    """``[B, H, W]`` bool mask of the real cells of ``x [B, C, H, W]`` given ``grid_sizes [B, 2]``."""
    return grid_mask(grid_sizes.to(x.device), x.shape[-2], x.shape[-1])


def zero_padding(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x [B, C, H, W]`` with the cells where ``mask [B, H, W]`` is False set to zero."""
    return x * mask[:, None].to(x.dtype)


def replicate_padding(x: torch.Tensor, grid_sizes: torch.Tensor) -> torch.Tensor:
    """``x [B, C, H, W]`` with every padded cell replaced by the nearest real cell of its image.

    Cell ``(i, j)`` of image ``b`` takes the value of ``(min(i, h_b - 1), min(j, w_b - 1))``.
    """
    batch, channels, height, width = x.shape
    sizes = grid_sizes.to(x.device).long()
    rows = torch.minimum(torch.arange(height, device=x.device)[None, :], sizes[:, :1] - 1)
    cols = torch.minimum(torch.arange(width, device=x.device)[None, :], sizes[:, 1:] - 1)
    x = x.gather(2, rows[:, None, :, None].expand(batch, channels, height, width))
    return x.gather(3, cols[:, None, None, :].expand(batch, channels, height, width))


def upsample2x(
    x: torch.Tensor, grid_sizes: torch.Tensor, out_grid_sizes: torch.Tensor, out_hw: tuple[int, int]
) -> torch.Tensor:
    """Padding-safe 2x bilinear upsampling onto a grid of ``out_hw`` cells.

    Args:
        x: ``[B, C, H, W]`` whose real cells are given by ``grid_sizes [B, 2]``.
        out_grid_sizes: ``[B, 2]`` real cells of the result, at most twice ``grid_sizes``
            (``2 * ceil(h / 2)`` upsampled cells cropped back to ``h`` for odd sizes).
        out_hw: the padded size of the result, at most ``(2H, 2W)``.

    Returns:
        ``[B, C, out_hw[0], out_hw[1]]``, zero outside ``out_grid_sizes``; on real cells equal to
        upsampling each image alone (edge-clamped, ``align_corners=False``) and cropping.
    """
    up = F.interpolate(replicate_padding(x, grid_sizes), scale_factor=2, mode="bilinear", align_corners=False)
    up = up[:, :, : out_hw[0], : out_hw[1]]
    return zero_padding(up, mask_like(up, out_grid_sizes))


def pool_to_grid(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average each ``factor x factor`` block of ``x [B, C, f*H, f*W]`` -> ``[B, C, H, W]``.

    The block of a patch cell covers exactly that patch, so real cells average real values only.
    """
    return F.avg_pool2d(x, kernel_size=factor, stride=factor) if factor > 1 else x


def upsample_by(x: torch.Tensor, grid_sizes: torch.Tensor, factor: int) -> torch.Tensor:
    """Padding-safe bilinear upsampling of ``x [B, C, H, W]`` by an integer ``factor`` -> ``[B, C, fH, fW]``.

    ``align_corners=False``; real cells equal upsampling each ``(h_b, w_b)`` image alone (to
    ``(f h_b, f w_b)``, DINOv2's ``resize(size=[s * upsample ...])``), the rest zero.
    """
    if factor == 1:
        return x
    up = F.interpolate(replicate_padding(x, grid_sizes), scale_factor=factor, mode="bilinear", align_corners=False)
    return zero_padding(up, mask_like(up, grid_sizes_at(grid_sizes, factor)))
