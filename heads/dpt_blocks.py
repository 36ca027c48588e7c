"""DPT's building blocks (Ranftl et al., 2021), made padding-safe for padded patch grids.

Each block takes the real-cell mask (or the real grid sizes) of its input next to the tensor,
zeroes the padding before every convolution with spatial extent and after every one that has
a bias, and normalises with :class:`MaskedBatchNorm2d`. The real cells of every output equal
what the image alone would give (see :mod:`.padded_grid`).
"""

from __future__ import annotations

import torch
from torch import nn

from .head_inputs import broadcast_to_cells
from .masked_batch_norm import MaskedBatchNorm2d
from .padded_grid import grid_sizes_at, mask_like, upsample2x, zero_padding

READOUTS = ("ignore", "add", "project")
STAGE_SCALES = ((4, 1), (2, 1), (1, 1), (1, 2))  # (up, down) of each reassembled layer vs the patch grid


def masked_conv(conv: nn.Module, x: torch.Tensor, mask_in: torch.Tensor, mask_out: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` with the padding of ``x`` zeroed first and the padding of the result zeroed after."""
    return zero_padding(conv(zero_padding(x, mask_in)), mask_out)


class Reassemble(nn.Module):
    """One DPT reassemble stage: readout, 1x1 projection, resampling to the stage's scale.

    ``forward(x [B, C, H, W], pooled [B, P] | None, grid_sizes [B, 2])`` -> ``[B, R, up*H/down, ...]``
    (``ceil(H / 2)`` for the downsampling stage), zero outside the stage's real cells.
    """

    def __init__(self, channels: int, out_channels: int, up: int, down: int, readout: str, pooled_channels: int):
        super().__init__()
        self.up, self.down, self.readout = up, down, readout
        self.readout_project = (
            nn.Sequential(nn.Conv2d(channels + pooled_channels, channels, kernel_size=1), nn.GELU())
            if readout == "project" else None
        )
        self.project = nn.Conv2d(channels, out_channels, kernel_size=1)
        if up > 1:
            self.resample: nn.Module = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=up, stride=up)
        elif down > 1:
            self.resample = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=down, padding=1)
        else:
            self.resample = nn.Identity()

    def forward(self, x: torch.Tensor, pooled: torch.Tensor | None, grid_sizes: torch.Tensor) -> torch.Tensor:
        mask = mask_like(x, grid_sizes)
        if self.readout == "add":
            x = x + broadcast_to_cells(pooled, mask)
        elif self.readout == "project":
            x = self.readout_project(torch.cat([x, broadcast_to_cells(pooled, mask)], dim=1))
        x = zero_padding(self.project(x), mask)
        x = self.resample(x)
        return zero_padding(x, mask_like(x, grid_sizes_at(grid_sizes, self.up, self.down)))


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``x + [norm](conv(relu([norm](conv(relu(x))))))``, 3x3 convs.

    ``forward(x [B, F, H, W], mask [B, H, W]) -> [B, F, H, W]``, zero on padding.
    """

    def __init__(self, width: int, use_batchnorm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=not use_batchnorm)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=not use_batchnorm)
        self.norm1 = MaskedBatchNorm2d(width) if use_batchnorm else None
        self.norm2 = MaskedBatchNorm2d(width) if use_batchnorm else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = masked_conv(self.conv1, torch.relu(x), mask, mask)
        out = self.norm1(out, mask) if self.norm1 is not None else out
        out = masked_conv(self.conv2, torch.relu(out), mask, mask)
        out = self.norm2(out, mask) if self.norm2 is not None else out
        return x + out


class FusionBlock(nn.Module):
    """DPT feature fusion: add the refined skip, refine, upsample 2x, 1x1 projection.

    ``forward(x [B, F, H, W], grid_sizes [B, 2], skip [B, F, H, W] | None, out_grid_sizes [B, 2],
    out_hw)`` -> ``[B, F, *out_hw]``. The upsampling is bilinear with ``align_corners=False``
    (DPT uses True, whose sampling positions depend on the padded canvas size).
    """

    def __init__(self, width: int, use_batchnorm: bool, has_skip: bool):
        super().__init__()
        self.skip_unit = ResidualConvUnit(width, use_batchnorm) if has_skip else None
        self.refine_unit = ResidualConvUnit(width, use_batchnorm)
        self.project = nn.Conv2d(width, width, kernel_size=1)

    def forward(
        self,
        x: torch.Tensor,
        grid_sizes: torch.Tensor,
        skip: torch.Tensor | None,
        out_grid_sizes: torch.Tensor,
        out_hw: tuple[int, int],
    ) -> torch.Tensor:
        mask = mask_like(x, grid_sizes)
        if self.skip_unit is not None:
            x = x + self.skip_unit(skip, mask)
        x = self.refine_unit(x, mask)
        x = upsample2x(x, grid_sizes, out_grid_sizes, out_hw)
        return zero_padding(self.project(x), mask_like(x, out_grid_sizes))
