"""Bilinear resizing as matrices, so that a window's patch grid -> its pixels -> the image canvas -> the label
map composes into one ``[out, in]`` matrix per axis.

``F.interpolate(x, size, mode="bilinear", align_corners=False)`` is separable: output row ``i`` is
``sum_r R_y[i, r] * x[r, :]`` and likewise for columns, so ``resize(x) = R_y @ x @ R_x.T``. The weights
here are PyTorch's (mmsegmentation's ``resize``): source index ``s = (i + 0.5) * in / out - 0.5``,
clamped at 0; rows ``floor(s)`` and ``min(floor(s) + 1, in - 1)`` with weights ``1 - frac`` and ``frac``.
The weights are computed in float32 as PyTorch's kernel does, the products in float64; a composed matrix
differs from the step-by-step float32 arithmetic by rounding only.
"""

from __future__ import annotations

import torch


def bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``[out_size, in_size]`` float64: ``F.interpolate``'s bilinear weights along one axis (``align_corners=False``)."""
    if in_size == out_size:
        return torch.eye(out_size, dtype=torch.float64)
    # PyTorch's CPU kernel computes the source index and the weight in float32 (its opmath type for
    # float32 input); doing the same keeps the weights equal to its own, not merely close
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    source = (scale * (torch.arange(out_size, dtype=torch.float32) + 0.5) - 0.5).clamp_(min=0)
    low = source.floor().long().clamp_(max=in_size - 1)
    high = (low + 1).clamp_(max=in_size - 1)
    frac = (source - low.float()).clamp_(0, 1).double()
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    matrix.index_put_((rows, low), 1.0 - frac, accumulate=True)
    matrix.index_put_((rows, high), frac, accumulate=True)
    return matrix


def cells_to_window(cells: int, window: int, patch_size: int, is_naflex: bool, output_scale: int = 1) -> torch.Tensor:
    """``[window, cells]`` float64: a window's output axis -> its pixels, as :func:`outputs_to_pixels`.

    NaFlex resizes the window to its grid, so the cells are resized to the window; FixRes / timm pad the
    window to whole patches, so the cells (``output_scale`` per patch) are resized to ``patches *
    patch_size`` pixels and the padding cut.
    """
    if is_naflex:
        return bilinear_matrix(cells, window)
    return bilinear_matrix(cells, cells // output_scale * patch_size)[:window]


def window_to_labels(
    cells: int,
    interval: tuple[int, int],
    coverage: torch.Tensor,
    label_size: int,
    patch_size: int,
    is_naflex: bool,
    output_scale: int = 1,
) -> torch.Tensor:
    """``[label_size, cells]`` float64: one axis of window -> canvas (divided by the window count) -> label map.

    Args:
        cells: the window's patch-grid length along this axis.
        interval: ``(start, end)`` of the window on the canvas, in pixels (end exclusive).
        coverage: ``[canvas]`` how many windows cover each pixel along this axis (the count is a product of
            the two axes' counts, since the windows are every row interval crossed with every column interval).
        label_size: the label map's length along this axis.
    """
    start, end = interval
    canvas = coverage.shape[0]
    placed = torch.zeros(canvas, cells, dtype=torch.float64)
    placed[start:end] = cells_to_window(cells, end - start, patch_size, is_naflex, output_scale)
    placed /= coverage.to(torch.float64)[:, None]
    return bilinear_matrix(canvas, label_size) @ placed
