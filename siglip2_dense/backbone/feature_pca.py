"""Patch features as colours: the first three principal components of one image's patches as RGB.

The PCA runs over the image's real patches only (padding never shifts the mean or the axes).
Each component is projected, given a fixed sign (its largest-magnitude projection positive, so
the colours are a function of the features alone, not of the SVD routine's sign choice) and
min-max scaled over the real patches to 0..255; padded cells are black. With NaFlex the image
keeps its aspect ratio; the patch grid is upsampled (nearest) to the image's size and shown
beside the image.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from siglip2_dense.errors import RequestError

NUM_COMPONENTS = 3


def principal_components(points: torch.Tensor, count: int = NUM_COMPONENTS) -> torch.Tensor:
    """``[N, C]`` points -> ``[N, count]`` projections on the top principal axes (float64).

    Signs are fixed so that each column's largest-magnitude entry is positive; columns beyond
    ``min(N, C)`` are zero.
    """
    centred = points.double() - points.double().mean(dim=0, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)
    axes = right[:count]  # [k, C], k <= count
    projections = centred @ axes.T  # [N, k]
    largest = projections.abs().argmax(dim=0)
    signs = torch.sign(projections[largest, torch.arange(projections.shape[1])])
    projections = projections * torch.where(signs == 0, torch.ones_like(signs), signs)
    if projections.shape[1] < count:
        projections = torch.cat([projections, projections.new_zeros(len(points), count - projections.shape[1])], 1)
    return projections


def min_max_to_bytes(values: torch.Tensor) -> torch.Tensor:
    """``[N, k]`` -> uint8 ``[N, k]``: each column's minimum -> 0, maximum -> 255 (a constant column -> 0)."""
    low = values.min(dim=0).values
    span = values.max(dim=0).values - low
    scaled = (values - low) / torch.where(span > 0, span, torch.ones_like(span))
    return (scaled * 255.0).round().clamp(0, 255).to(torch.uint8)


def pca_colours(features: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``features [C, H, W]`` and ``mask [H, W]`` (True = real patch) -> ``[H, W, 3]`` uint8 RGB, padding black."""
    if features.ndim != 3 or tuple(mask.shape) != tuple(features.shape[1:]):
        raise RequestError(f"expected features [C, H, W] and mask [H, W], got {tuple(features.shape)} and "
                           f"{tuple(mask.shape)}")
    mask = mask.bool().cpu()
    if not bool(mask.any()):
        raise RequestError("the mask marks no real patch")
    points = features.detach().cpu().permute(1, 2, 0)[mask]  # [N, C]
    colours = np.zeros((*mask.shape, NUM_COMPONENTS), dtype=np.uint8)
    colours[mask.numpy()] = min_max_to_bytes(principal_components(points)).numpy()
    return colours


def grid_to_image_size(colours: np.ndarray, image_size: tuple[int, int], patch_size: int, is_naflex: bool) -> np.ndarray:
    """``[h, w, 3]`` cell colours of the image's own grid -> ``[H, W, 3]``, nearest neighbour.

    NaFlex resized the image onto the grid, so the grid is stretched to the image; FixRes / timm
    padded it, so each cell covers ``patch_size`` pixels and the overhang is cropped.
    """
    height, width = image_size
    cells_h, cells_w = colours.shape[:2]
    if is_naflex:
        rows = np.minimum((np.arange(height) * cells_h) // height, cells_h - 1)
        columns = np.minimum((np.arange(width) * cells_w) // width, cells_w - 1)
    else:
        rows = np.minimum(np.arange(height) // patch_size, cells_h - 1)
        columns = np.minimum(np.arange(width) // patch_size, cells_w - 1)
    return colours[rows[:, None], columns[None, :]]


def feature_pca_picture(backbone: Any, image: np.ndarray, max_num_patches: int | None = None) -> np.ndarray:
    """``[H, W, 3]`` uint8 image -> ``[H, 2W, 3]``: the image, then its first tapped layer's PCA colours.

    Args:
        backbone: a ``Backbone`` (or ``TimmBackbone``) from ``load_backbone(..., layers=[L])``.
        max_num_patches: NaFlex patch budget (default: the checkpoint's).
    """
    from siglip2_dense.backbone.preprocess import images_to_arrays

    array = images_to_arrays([image])[0]
    kwargs = {"max_num_patches": max_num_patches} if backbone.is_naflex else {}
    if max_num_patches is not None and not backbone.is_naflex:
        raise RequestError("max_num_patches is for NaFlex checkpoints; FixRes / timm keep the image's size")
    with torch.inference_mode():
        features = backbone(**backbone.preprocess([array], **kwargs))
    cells_h, cells_w = (int(v) for v in features.grid_sizes[0].tolist())
    grid = features.maps[0][0, :, :cells_h, :cells_w].float()
    colours = pca_colours(grid, features.mask[0, :cells_h, :cells_w])
    pixels = grid_to_image_size(colours, array.shape[:2], backbone.patch_size, backbone.is_naflex)
    return np.concatenate([array, pixels], axis=1)
