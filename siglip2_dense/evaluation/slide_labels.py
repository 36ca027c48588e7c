"""Sliding-window segmentation labels with the classes streamed in chunks: mmseg's numbers, a fraction of the memory.

mmsegmentation's ``slide_inference`` followed by the resize to the label map and the argmax holds
``K`` full-resolution score maps several times over (the upsampled windows, their sum, the
normalised sum, the resized result): for ADE20K's 150 classes at 512x683 that is 210 MB per copy,
and on a CPU the first touch of every such fresh buffer costs as much as the arithmetic.

Every step before the argmax works on each class alone (bilinear resizing, summing windows,
dividing by the window count), so here the model runs once per window and the windows' patch-grid
outputs are kept (small); then the classes go through the arithmetic of
:func:`~siglip2_dense.inference.slide_window` (windows added into a buffer, divided by the number
of windows over each pixel) and the resize a chunk at a time, in buffers of ``chunk_bytes`` that the
allocator reuses, and a running maximum keeps the best class per pixel (the first on ties, as
``argmax``). The labels are those of the full computation (the tests compare them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from siglip2_dense.evaluation.grid_to_pixels import heads_output_scale, outputs_to_pixels, tensor_to_images
from siglip2_dense.evaluation.loop import check_output_channels
from siglip2_dense.inference import slide_window_boxes, window_coverage

# ~17 classes of a 512x683 image per chunk: buffers under glibc's largest mmap threshold (32 MiB), so
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
        chunk_bytes: the size of one chunk's full-resolution score buffer.
        num_classes: the classes the evaluation counts; a model with another number is a ConfigError.
    """
    backbone = model.backbone
    device = next(model.parameters()).device
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    height, width = tensor.shape[-2:]
    size = (int(size[0]), int(size[1]))
    windows = window_outputs(model, tensor, crop, stride, max_num_patches)
    check_output_channels(windows[0][0][0], "segmentation", num_classes)
    num_classes = int(windows[0][0].shape[1])
    coverage = window_coverage([box for _, _, box in windows], height, width, device)
    per_chunk = max(1, chunk_bytes // (4 * max(height * width, size[0] * size[1])))
    best = labels = None
    for start in range(0, num_classes, per_chunk):
        stop = min(start + per_chunk, num_classes)
        summed = torch.zeros(1, stop - start, height, width, device=device)
        for outputs, shapes, (y1, y2, x1, x2) in windows:
            summed[:, :, y1:y2, x1:x2] += outputs_to_pixels(
                outputs[:, start:stop], shapes, (y2 - y1, x2 - x1), backbone.patch_size, backbone.is_naflex,
                heads_output_scale([model.head]),
            )
        scores = summed.div_(coverage)[0]
        if tuple(scores.shape[-2:]) != size:
            scores = F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]
        best, labels = merge_argmax(best, labels, scores, start)
    return labels
