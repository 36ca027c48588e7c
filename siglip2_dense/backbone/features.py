"""What every backbone is and returns: the :class:`DenseBackbone` interface, :class:`DenseFeatures`,
and the NaFlex token -> 2-D grid conversion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

from siglip2_dense.errors import RequestError


@dataclass
class DenseFeatures:
    """Dense features of a batch, on the padded patch grid.

    Attributes:
        maps: one ``[B, C, Hmax, Wmax]`` tensor per requested layer; cells outside an image's own
            ``(h, w)`` grid are zero.
        mask: ``[B, Hmax, Wmax]`` bool, True where a patch is real.
        grid_sizes: ``[B, 2]`` long, each image's ``(h, w)`` in patches.
        pooled: ``[B, C]`` MAP-head output (the image embedding), or None when the backbone has
            no pooling head or the last block was not run.
    """

    maps: list[torch.Tensor]
    mask: torch.Tensor
    grid_sizes: torch.Tensor
    pooled: torch.Tensor | None = None


@runtime_checkable
class DenseBackbone(Protocol):
    """What heads, inference and evaluation may rely on in a backbone (SigLIP / SigLIP2 or timm).

    Attributes:
        out_channels: ``C`` of each tapped layer's map, in the order of ``DenseFeatures.maps``.
        layers: the tapped block indices (0-based; block ``i``'s output is transformers' ``hidden_states[i + 1]``).
        patch_size: ``p``, pixels per patch side.
        is_naflex: True when ``preprocess`` gives patch sequences ``[B, N, p*p*3]`` at each image's own
            aspect ratio; False for padded images ``[B, 3, H, W]`` (FixRes, timm).
        num_blocks: transformer blocks in the tower.
        name_or_path: the checkpoint it was loaded from (hub id, local folder or ``timm:<name>``).
    """

    out_channels: list[int]
    layers: list[int]
    patch_size: int
    is_naflex: bool
    num_blocks: int
    name_or_path: str

    def preprocess(
        self, images: Any, max_num_patches: int | None = None, size: int | Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Images (HWC uint8 arrays or PIL) -> the keyword arguments of ``__call__``:
        ``pixel_values``, ``spatial_shapes [B, 2]`` and, for NaFlex, ``pixel_attention_mask [B, N]``."""
        ...

    def __call__(
        self,
        pixel_values: torch.Tensor,
        spatial_shapes: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
    ) -> DenseFeatures:
        """A preprocessed batch -> its :class:`DenseFeatures` on the padded patch grid."""
        ...


def grid_mask(grid_sizes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, 2]`` (h, w) per image -> ``[B, height, width]`` bool, True inside each image's grid."""
    rows = torch.arange(height, device=grid_sizes.device)[None, :, None]
    cols = torch.arange(width, device=grid_sizes.device)[None, None, :]
    return (rows < grid_sizes[:, 0, None, None]) & (cols < grid_sizes[:, 1, None, None])


def tokens_to_grid(tokens: torch.Tensor, spatial_shapes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter NaFlex tokens back onto a 2-D patch grid.

    Image ``b``'s valid tokens are its first ``h_b * w_b`` tokens, row-major; padding follows.

    Args:
        tokens: ``[B, N, C]``.
        spatial_shapes: ``[B, 2]`` long, ``(h_b, w_b)`` per image, with ``h_b * w_b <= N``.

    Returns:
        ``grid [B, C, Hmax, Wmax]`` (zero outside each image) and ``mask [B, Hmax, Wmax]`` bool,
        where ``Hmax, Wmax`` are the largest ``h_b``, ``w_b`` of the batch.
    """
    if tokens.ndim != 3 or spatial_shapes.ndim != 2 or spatial_shapes.shape != (tokens.shape[0], 2):
        raise RequestError(
            f"tokens_to_grid: got tokens {tuple(tokens.shape)} and spatial_shapes {tuple(spatial_shapes.shape)}; "
            "expected [B, N, C] and [B, 2]"
        )
    shapes = spatial_shapes.to(device=tokens.device, dtype=torch.long)
    batch, num_tokens, channels = tokens.shape
    counts = shapes[:, 0] * shapes[:, 1]
    if bool((counts > num_tokens).any()) or bool((shapes <= 0).any()):
        raise RequestError(
            f"tokens_to_grid: spatial_shapes {shapes.tolist()} need up to {int(counts.max())} tokens, "
            f"tokens hold {num_tokens}; every h*w must be in [1, N]"
        )
    height, width = int(shapes[:, 0].max()), int(shapes[:, 1].max())
    mask = grid_mask(shapes, height, width)
    if bool((counts == height * width).all()):  # every image fills the grid: a view, no copy
        return tokens[:, : height * width].reshape(batch, height, width, channels).permute(0, 3, 1, 2), mask
    rows = torch.arange(height, device=tokens.device)[None, :, None]
    cols = torch.arange(width, device=tokens.device)[None, None, :]
    index = (rows * shapes[:, 1, None, None] + cols).clamp(max=num_tokens - 1)
    index = torch.where(mask, index, torch.zeros_like(index)).reshape(batch, height * width)
    gathered = tokens.gather(1, index[:, :, None].expand(-1, -1, channels))
    gathered.mul_(mask.reshape(batch, height * width, 1).to(tokens.dtype))
    grid = gathered.reshape(batch, height, width, channels).permute(0, 3, 1, 2)
    return grid, mask
