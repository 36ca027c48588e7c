"""Sliding-window labels as matrix products: the same scores as mmseg's step-by-step arithmetic."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siglip2_dense.evaluation.grid_to_pixels import outputs_to_pixels
from siglip2_dense.evaluation.resize_matrices import bilinear_matrix
from siglip2_dense.evaluation.slide_labels import label_map_matrices, label_map_scores
from siglip2_dense.inference import slide_window_boxes, window_coverage


@pytest.mark.parametrize("in_size, out_size", [(7, 31), (32, 512), (512, 480), (683, 640), (5, 5), (9, 2), (1, 4)])
def test_bilinear_matrix_is_interpolate_along_one_axis(in_size, out_size):
    signal = torch.randn(1, 3, in_size, 4, generator=torch.Generator().manual_seed(in_size))  # float32 logits
    want = F.interpolate(signal, size=(out_size, 4), mode="bilinear", align_corners=False).double()
    got = torch.einsum("oi,bcij->bcoj", bilinear_matrix(in_size, out_size), signal.double())
    assert (got - want).abs().max().item() <= 4e-6  # float32 weights and sums round at ~1e-7 of |x| <= 5; a wrong tap is O(1)


def step_by_step(windows, canvas, label_size, patch_size, is_naflex):
    """mmseg's arithmetic: each window to its pixels, summed on the canvas, / window count, resized."""
    height, width = canvas
    summed = torch.zeros(1, windows[0][0].shape[1], height, width)
    for outputs, shapes, (y1, y2, x1, x2) in windows:
        summed[:, :, y1:y2, x1:x2] += outputs_to_pixels(outputs, shapes, (y2 - y1, x2 - x1), patch_size, is_naflex)
    scores = summed / window_coverage([box for _, _, box in windows], height, width)
    return F.interpolate(scores, size=label_size, mode="bilinear", align_corners=False)[0]


def random_windows(canvas, crop, stride, patch_size, is_naflex, classes, seed):
    generator = torch.Generator().manual_seed(seed)
    windows = []
    for box in slide_window_boxes(*canvas, crop, stride):
        y1, y2, x1, x2 = box
        if is_naflex:  # a grid that need not divide the window (the processor's resize)
            grid = (max(1, (y2 - y1) // patch_size - 1), max(1, (x2 - x1) // patch_size + 1))
        else:  # whole patches covering the window, padding right and bottom
            grid = (-(-(y2 - y1) // patch_size), -(-(x2 - x1) // patch_size))
        outputs = torch.randn(1, classes, grid[0] + 2, grid[1] + 1, generator=generator)  # padded batch grid
        windows.append((outputs, torch.tensor([grid]), box))
    return windows


@pytest.mark.parametrize("is_naflex", [True, False])
@pytest.mark.parametrize(
    "canvas, label_size, crop, stride",
    [
        ((512, 683), (480, 640), (512, 512), (341, 341)),  # ADE20K's protocol
        ((64, 90), (60, 85), (32, 32), (21, 21)),  # several rows and columns of windows
        ((40, 30), (40, 30), (64, 64), (42, 42)),  # smaller than the crop; label map at canvas size
        ((70, 50), (90, 41), (33, 20), (17, 20)),  # uneven crop, stride equal to the crop on one axis
    ],
)
def test_label_map_scores_equal_mmseg_arithmetic(is_naflex, canvas, label_size, crop, stride):
    patch_size = 16 if canvas[0] > 100 else 4
    windows = random_windows(canvas, crop, stride, patch_size, is_naflex, classes=7, seed=sum(canvas))
    want = step_by_step(windows, canvas, label_size, patch_size, is_naflex)
    groups = label_map_matrices(windows, canvas, label_size, patch_size, is_naflex)
    got = torch.cat([label_map_scores(groups, start, min(start + 3, 7)) for start in range(0, 7, 3)])
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= 1e-5
