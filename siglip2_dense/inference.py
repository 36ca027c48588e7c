"""From a model's output on the patch grid to a prediction at image resolution.

Whole-image, sliding-window (mmsegmentation's ``slide_inference`` arithmetic), flip / multi-scale
test-time augmentation (mmsegmentation's ``SegTTAModel``: the mean of per-augmentation softmax
probabilities) and NaFlex-native prediction (one forward at the image's own aspect ratio).

``fn`` below is any callable ``[B, C, h, w] -> [B, K, h', w']``; when ``(h', w') != (h, w)`` (a
model that answers on its patch grid) the output is resized bilinearly to ``(h, w)``, as mmseg's
``encode_decode`` does. Nothing here turns gradients off: wrap calls in ``torch.inference_mode()``
when evaluating.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from siglip2_dense.errors import DataError, RequestError

PredictFn = Callable[[Tensor], Tensor]
TASKS = ("segmentation", "depth")
MODES = ("whole", "slide")


def resize_logits(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (``align_corners=False``, as mmseg): ``[B, K, h, w]`` -> ``[B, K, *size]``.

    Returns ``logits`` itself when it already has that size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def predict_whole(fn: PredictFn, image: Tensor) -> Tensor:
    """One forward on the whole image: ``[B, C, H, W]`` -> ``[B, K, H, W]``."""
    _check_image(image)
    return resize_logits(fn(image), image.shape[-2:])


def slide_window_intervals(length: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` window intervals along one axis of mmseg's ``slide_inference`` (end exclusive).

    ``grids = max(length - crop + stride - 1, 0) // stride + 1``; interval ``i`` ends at
    ``min(i * stride + crop, length)`` and starts ``crop`` before that where the image allows.
    """
    grids = max(length - crop + stride - 1, 0) // stride + 1
    ends = [min(i * stride + crop, length) for i in range(grids)]
    return [(max(end - crop, 0), end) for end in ends]


def slide_window_boxes(
    height: int, width: int, crop: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341)
) -> list[tuple[int, int, int, int]]:
    """The windows of mmseg's ``slide_inference``, as ``(y1, y2, x1, x2)`` (end exclusive), rows first.

    ``h_grids = max(H - crop_h + stride_h - 1, 0) // stride_h + 1`` (same for width); window
    ``(i, j)`` starts at ``(i * stride_h, j * stride_w)``, is cut at the image border and then moved
    back so that it keeps the crop size where the image allows (``y1 = max(y2 - crop_h, 0)``). An image
    smaller than the crop gets one window, the whole image. The windows are every row interval of
    :func:`slide_window_intervals` crossed with every column interval.
    """
    crop_h, crop_w = _pair(crop, "crop")
    stride_h, stride_w = _pair(stride, "stride")
    if stride_h > crop_h or stride_w > crop_w:
        raise RequestError(
            f"stride {(stride_h, stride_w)} larger than crop {(crop_h, crop_w)} would leave gaps"
        )
    rows = slide_window_intervals(height, crop_h, stride_h)
    columns = slide_window_intervals(width, crop_w, stride_w)
    return [(y1, y2, x1, x2) for y1, y2 in rows for x1, x2 in columns]


def slide_window(
    fn: PredictFn,
    image: Tensor,
    crop: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    num_outputs: int | None = None,
) -> Tensor:
    """Sliding-window prediction, mmseg's ``slide_inference``: ``[B, C, H, W]`` -> ``[B, K, H, W]``.

    Each window's output (resized to the window if ``fn`` answers at another resolution) is added into
    a buffer; every pixel is divided by the number of windows that covered it.

    Args:
        fn: ``[B, C, h, w] -> [B, K, h', w']``.
        image: ``[B, C, H, W]``.
        crop, stride: ``(h, w)`` window size and step, in pixels (ADE20K: 512 and 341).
        num_outputs: K, if known; otherwise taken from the first window (and checked for the rest).
    """
    _check_image(image)
    height, width = image.shape[-2:]
    summed: Tensor | None = None
    boxes = slide_window_boxes(height, width, crop, stride)
    for y1, y2, x1, x2 in boxes:
        window = resize_logits(fn(image[:, :, y1:y2, x1:x2]), (y2 - y1, x2 - x1))
        if summed is None:
            if num_outputs is not None and window.shape[1] != num_outputs:
                raise RequestError(f"num_outputs={num_outputs}, but fn returned {window.shape[1]} channels")
            dtype = torch.promote_types(window.dtype, torch.float32)
            summed = window.new_zeros((image.shape[0], window.shape[1], height, width), dtype=dtype)
        elif window.shape[:2] != summed.shape[:2]:
            raise DataError(
                f"fn returned {tuple(window.shape[:2])} on one window and {tuple(summed.shape[:2])} on another"
            )
        summed[:, :, y1:y2, x1:x2] += window
    assert summed is not None  # slide_window_boxes always yields at least one window
    coverage = window_coverage(boxes, height, width, image.device)
    return summed.div_(coverage.to(summed.dtype))  # the buffer is ours: no second [B, K, H, W] copy


def window_coverage(boxes: Sequence[tuple[int, int, int, int]], height: int, width: int,
                    device: torch.device | str | None = None) -> Tensor:
    """``[1, 1, H, W]`` float32: how many of the ``(y1, y2, x1, x2)`` windows cover each pixel."""
    count = torch.zeros(1, 1, height, width, dtype=torch.float32, device=device)
    for y1, y2, x1, x2 in boxes:
        count[:, :, y1:y2, x1:x2] += 1
    return count


def predict_tta(
    fn: PredictFn,
    image: Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    mode: str = "whole",
    crop: Sequence[int] = (512, 512),
    stride: Sequence[int] = (341, 341),
    task: str = "segmentation",
) -> Tensor:
    """Multi-scale and flip test-time augmentation: ``[B, C, H, W]`` -> ``[B, K, H, W]``.

    For each scale ``s`` the image is resized (bilinear) to ``(int(H*s + 0.5), int(W*s + 0.5))``, as
    mmcv's ``rescale_size``; with ``flip`` also mirrored left-right. Each augmented prediction
    (``mode="whole"`` or ``"slide"`` with ``crop`` / ``stride``) is mirrored back and resized to
    ``(H, W)``, then:

    - ``task="segmentation"``: the mean of per-augmentation ``softmax`` over K (``sigmoid`` when
      K == 1), as mmseg's ``SegTTAModel`` -- probabilities, even with a single augmentation;
    - ``task="depth"``: the mean of the predicted values.
    """
    _check_image(image)
    if mode not in MODES:
        raise RequestError(f"mode must be one of {MODES}, got {mode!r}")
    if task not in TASKS:
        raise RequestError(f"task must be one of {TASKS}, got {task!r}")
    if not image.is_floating_point():
        raise RequestError(f"predict_tta resizes the image and needs a float tensor, got {image.dtype}")
    if len(scales) == 0 or any(s <= 0 for s in scales):
        raise RequestError(f"scales must be a non-empty list of positive numbers, got {scales!r}")
    height, width = image.shape[-2:]
    total: Tensor | None = None
    num_augmentations = 0
    for scale in scales:
        scaled_size = (int(height * float(scale) + 0.5), int(width * float(scale) + 0.5))
        scaled = resize_logits(image, scaled_size)
        for mirrored in (False, True) if flip else (False,):
            view = scaled.flip(-1) if mirrored else scaled
            if mode == "whole":
                out = predict_whole(fn, view)
            else:
                out = slide_window(fn, view, crop, stride)
            out = resize_logits(out.flip(-1) if mirrored else out, (height, width))
            if task == "segmentation":
                out = out.softmax(dim=1) if out.shape[1] > 1 else out.sigmoid()
            total = out if total is None else total + out
            num_augmentations += 1
    assert total is not None
    return total / num_augmentations


def predict_native(
    model: Callable[..., Tensor], preprocess: Callable[..., dict[str, Any]], images: Any,
    max_num_patches: int | None = None,
) -> list[Tensor]:
    """NaFlex-native prediction: one forward per image at its own aspect ratio, no sliding.

    Args:
        model: ``model(**inputs)`` returns ``[B, K, Hmax, Wmax]`` on the padded patch grid, image ``i``'s
            patches in the top-left ``[:h_i, :w_i]`` (a ``DenseModel`` or ``HeadGrid``).
        preprocess: ``preprocess(images, max_num_patches=...)`` -> NaFlex inputs: ``pixel_values``
            ``[B, N, p*p*3]`` patches and ``spatial_shapes`` (LongTensor ``[B, 2]``, each image's
            ``(h, w)`` patches), e.g. the backbone's own ``preprocess``.
        images: B images, ``H_i x W_i x 3`` uint8 arrays (or PIL images); one image alone is accepted.
        max_num_patches: the patch budget per image (NaFlex sequence length); None: the backbone's default.

    Returns:
        B tensors ``[K, H_i, W_i]``: each image's own patch grid cropped out of the padded output and
        resized bilinearly to the image's size (logits, or depth for a depth head).

    Raises:
        RequestError: ``preprocess`` gives FixRes images ``[B, 3, H, W]`` (their padded partial
            patches would shift the map).
    """
    if isinstance(images, np.ndarray | Tensor) and images.ndim == 4:
        images = list(images)  # a stacked batch [B, H, W, 3]
    elif not isinstance(images, Sequence):
        images = [images]  # one image, as Backbone.preprocess accepts
    images = list(images)
    if not images:
        raise RequestError("predict_native needs at least one image")
    inputs = preprocess(images, max_num_patches=max_num_patches)
    if inputs["pixel_values"].ndim != 3:
        # FixRes preprocessing pads partial patches, so the grid does not cover exactly the image
        raise RequestError(
            "predict_native needs a NaFlex backbone (patch sequences [B, N, p*p*3]); got images of shape "
            f"{tuple(inputs['pixel_values'].shape)}: use predict_whole or slide_window for FixRes"
        )
    device = _module_device(model)
    if device is not None:
        inputs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    output = model(**inputs)
    grid_sizes = inputs["spatial_shapes"].tolist()
    if output.ndim != 4 or output.shape[0] != len(images):
        raise DataError(f"expected model output [B={len(images)}, K, Hmax, Wmax], got {tuple(output.shape)}")
    predictions = []
    for i, ((h, w), image) in enumerate(zip(grid_sizes, images)):
        if h > output.shape[-2] or w > output.shape[-1]:
            raise DataError(
                f"image {i} has a {h}x{w} patch grid, larger than the output grid {tuple(output.shape[-2:])}"
            )
        own_grid = output[i : i + 1, :, :h, :w]
        predictions.append(resize_logits(own_grid, _image_size(image))[0])
    return predictions


def _image_size(image: Any) -> tuple[int, int]:
    """``(H, W)`` of an HWC array or a PIL image."""
    if isinstance(image, np.ndarray | Tensor):
        return int(image.shape[0]), int(image.shape[1])
    width, height = image.size  # PIL
    return int(height), int(width)


def _module_device(model: Any) -> torch.device | None:
    parameters = getattr(model, "parameters", None)
    if parameters is None:
        return None
    first = next(iter(parameters()), None)
    return None if first is None else first.device


def _pair(value: Sequence[int] | int, name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 1 for v in pair):
        raise RequestError(f"{name} must be a positive int or an (h, w) pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_image(image: Tensor) -> None:
    if image.ndim != 4:
        raise RequestError(f"expected an image batch [B, C, H, W], got shape {tuple(image.shape)}")
