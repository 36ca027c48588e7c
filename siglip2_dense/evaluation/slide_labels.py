"""Sliding-window segmentation labels: mmseg's numbers with the pixel-resolution work done as matrix products.

mmsegmentation's ``slide_inference`` followed by the resize to the label map and the argmax resizes
each window's ``K`` logit maps to the window's pixels, adds them into a ``K``-channel canvas, divides
by the number of windows over each pixel and resizes the canvas to the label map: for ADE20K's 150
classes at 512x683 that is several passes over 210 MB per image, a tenth of the model's own time on a CPU.

Every one of those steps is linear in the window's patch-grid logits and separable (bilinear resizing
works on rows and columns apart; the window count at a pixel is the count of row intervals over its
row times the count of column intervals over its column), so window ``w``'s contribution to the label
map's scores is ``A_w @ L_w @ B_w.T`` with ``A_w [H, h]`` and ``B_w [W, w]`` composed once per image
(:mod:`~siglip2_dense.evaluation.resize_matrices`). Windows on the same row interval share ``A``, so
their column products are summed first and each row interval costs one matrix product. Classes go
through in chunks of ``chunk_bytes`` and a running maximum keeps the best class per pixel (the first on
ties, as ``argmax``). The scores equal the step-by-step float32 arithmetic within rounding (1e-5, tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from siglip2_dense.evaluation.grid_to_pixels import heads_output_scale, tensor_to_images
from siglip2_dense.evaluation.loop import check_output_channels
from siglip2_dense.evaluation.resize_matrices import window_to_labels
from siglip2_dense.inference import slide_window_boxes

# ~20 classes of a 480x640 label map per chunk: buffers under glibc's largest mmap threshold (32 MiB), so
# they come back from the heap instead of fresh pages, and few enough operations per image
CHUNK_BYTES = 24 * 2**20


def merge_argmax(
    best: torch.Tensor | None, labels: torch.Tensor | None, scores: torch.Tensor, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold ``scores [k, H, W]`` (classes ``offset .. offset + k - 1``) into the running ``(best, labels)``.

    Returns the new ``(best [H, W], labels [H, W] long)``; a later class wins only when strictly
    better, so ties keep the lowest class index, as ``argmax`` over all classes at once.
    """
    values, indices = scores.max(dim=0)
    if best is None or labels is None:
        return values, indices + offset
    better = values > best
    return torch.where(better, values, best), torch.where(better, indices + offset, labels)


def window_outputs(
    model: nn.Module, image: torch.Tensor, crop: Sequence[int], stride: Sequence[int], max_num_patches: int | None
) -> list[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]]:
    """The model's patch-grid outputs on every window of ``image [1, 3, H, W]`` (0..255), in slide order.

    Returns ``(outputs [1, K, Hmax, Wmax], spatial_shapes [1, 2], window box (y1, y2, x1, x2))`` per window.
    """
    backbone = model.backbone
    kwargs = {"max_num_patches": max_num_patches} if backbone.is_naflex else {}
    found = []
    for box in slide_window_boxes(image.shape[-2], image.shape[-1], crop, stride):
        y1, y2, x1, x2 = box
        inputs = backbone.preprocess(tensor_to_images(image[:, :, y1:y2, x1:x2]), **kwargs)
        found.append((model(**inputs), inputs["spatial_shapes"], box))
    return found


def label_map_matrices(
    windows: Sequence[tuple[torch.Tensor, torch.Tensor, tuple[int, int, int, int]]],
    canvas_size: Sequence[int],
    label_size: Sequence[int],
    patch_size: int,
    is_naflex: bool,
    output_scale: int = 1,
) -> list[tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]]:
    """The windows' grid -> label-map maps, grouped by row interval.

    Args:
        windows: ``(outputs [1, K, Hmax, Wmax], spatial_shapes [1, 2], box (y1, y2, x1, x2))`` per window,
            as :func:`window_outputs`; the boxes are every row interval crossed with every column interval.
        canvas_size: ``(H, W)`` of the image the windows slide over; label_size: ``(H', W')`` of the label map.
        output_scale: the heads' cells per patch side (``s``: a window's own cells are ``[:s*h, :s*w]``).

    Returns:
        ``(A [H', h] float32, [(logits [K, h, w], B [W', w] float32), ...])`` per row interval and grid height.
    """
    rows = list(dict.fromkeys(box[:2] for _, _, box in windows))
    columns = list(dict.fromkeys(box[2:] for _, _, box in windows))
    row_cover = interval_coverage(rows, int(canvas_size[0]))
    column_cover = interval_coverage(columns, int(canvas_size[1]))
    groups: dict[tuple[int, int, int], tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
    for outputs, shapes, (y1, y2, x1, x2) in windows:
        h, w = (int(v) * output_scale for v in shapes[0].tolist())
        logits = outputs[0, :, :h, :w].float()
        key = (y1, y2, h)
        if key not in groups:
            rows_matrix = window_to_labels(h, (y1, y2), row_cover, int(label_size[0]), patch_size, is_naflex,
                                           output_scale)
            groups[key] = (rows_matrix.to(logits.dtype).to(logits.device), [])
        columns_matrix = window_to_labels(w, (x1, x2), column_cover, int(label_size[1]), patch_size, is_naflex,
                                          output_scale)
        groups[key][1].append((logits, columns_matrix.to(logits.dtype).to(logits.device)))
    return list(groups.values())


def interval_coverage(intervals: Sequence[tuple[int, int]], length: int) -> torch.Tensor:
    """``[length]`` float32: how many of the ``(start, end)`` intervals cover each position."""
    count = torch.zeros(length)
    for start, end in intervals:
        count[start:end] += 1
    return count


def label_map_scores(
    groups: Sequence[tuple[torch.Tensor, Sequence[tuple[torch.Tensor, torch.Tensor]]]], start: int, stop: int
) -> torch.Tensor:
    """Classes ``start .. stop - 1`` of the label map's scores: ``[stop - start, H', W']`` float32.

    The result is a view of an ``[H', k, W']`` buffer: each row interval is one plain matrix product
    ``A [H', h] @ [h, k * W']``, several times faster on a CPU than a product broadcast over the classes.
    """
    scores = None
    for rows_matrix, members in groups:
        across = None  # [k, h, W']: the row interval's windows, each resized along its columns, summed
        for logits, columns_matrix in members:
            part = torch.matmul(logits[start:stop], columns_matrix.T)
            across = part if across is None else across.add_(part)
        classes, cells, width = across.shape
        flat = across.permute(1, 0, 2).reshape(cells, classes * width)
        placed = torch.mm(rows_matrix, flat)
        scores = placed if scores is None else scores.add_(placed)
    assert scores is not None  # at least one window
    return scores.view(scores.shape[0], stop - start, -1).permute(1, 0, 2)


def slide_window_labels(
    model: nn.Module,
    image: np.ndarray,
    size: Sequence[int],
    crop: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    max_num_patches: int | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    num_classes: int | None = None,
) -> torch.Tensor:
    """``[h, w, 3]`` uint8 image -> ``[H, W]`` long labels at ``size``, as the argmax of the resized slide scores.

    Args:
        model: a ``DenseModel``-like module (``model.backbone.preprocess``; ``model(**inputs)`` ->
            ``[1, K, Hmax, Wmax]`` logits on the patch grid).
        size: ``(H, W)`` of the label map; the scores are resized bilinearly to it (``align_corners=False``).
        crop, stride: the sliding window in pixels of ``image``.
        max_num_patches: NaFlex patch budget per window.
        chunk_bytes: the size of one chunk's label-map score buffer.
        num_classes: the classes the evaluation counts; a model with another number is a ConfigError.
    """
    backbone = model.backbone
    device = next(model.parameters()).device
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    size = (int(size[0]), int(size[1]))
    windows = window_outputs(model, tensor, crop, stride, max_num_patches)
    check_output_channels(windows[0][0][0], "segmentation", num_classes)
    num_classes = int(windows[0][0].shape[1])
    groups = label_map_matrices(windows, tensor.shape[-2:], size, backbone.patch_size, backbone.is_naflex,
                                heads_output_scale([model.head]))
    per_chunk = max(1, chunk_bytes // (4 * size[0] * size[1]))
    best = labels = None
    for start in range(0, num_classes, per_chunk):
        stop = min(start + per_chunk, num_classes)
        best, labels = merge_argmax(best, labels, label_map_scores(groups, start, stop), start)
    return labels
