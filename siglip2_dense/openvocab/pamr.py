"""PAMR, pixel-adaptive mask refinement, as the SCLIP / NACLIP code runs it on score maps.

Transcribed from ``pamr.py`` of wangf3014/SCLIP (identical in sinahmr/NACLIP; originally
visinf/1-stage-wseg ``models/mods/pamr.py``, Apache 2.0). For each dilation ``d`` the 8 neighbours
at offsets ``(±d, ±d), (±d, 0), (0, ±d)`` of every pixel are read with replicate padding. With the
image ``x [B, C, H, W]``:

- ``std[p]``: the standard deviation (unbiased, ``torch.std``) of ``x`` per channel over the 3x3
  (dilated) windows of ``p`` of *all* dilations together, ``p`` included once per dilation
  (``LocalStDev`` stacks ``9 * len(d)`` values, then one ``std``);
- affinity logits ``a[p, n] = mean_c( -|x[p] - x[n]| / (1e-8 + 0.1 * std[p]) )`` over channels,
  one per neighbour of every dilation (``LocalAffinityAbs``), then a softmax over all ``8 * len(d)``
  neighbours;
- ``iterations`` times: ``m[p] = sum_n softmax(a)[p, n] * m[n]`` (``LocalAffinityCopy``).

The scores are first resized to the image (bilinear, ``align_corners=True``, as the reference; a
no-op at the same size). The affinity is invariant to a per-channel affine change of the image
(``|s (x_p - x_n)| / (0.1 |s| std)``) up to the ``1e-8``, so the mean/std normalisation and channel
order of the lineage's inputs do not matter: the raw pixel values give the same refinement.
The lineage's settings: ``pamr_steps=10``, ``pamr_stride=(8, 16)`` (NACLIP's defaults,
SCLIP's ``clip_segmentor.py`` signature), applied to the scores at the ground truth's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from siglip2_dense.errors import RequestError

PAMR_ITERATIONS = 10  # sinahmr/NACLIP naclip.py: pamr_steps=10
PAMR_DILATIONS = (8, 16)  # wangf3014/SCLIP clip_segmentor.py, sinahmr/NACLIP naclip.py: pamr_stride=(8, 16)
# the 8 neighbour offsets (dy, dx) in the reference kernels' order: rows of the 3x3 window, centre skipped
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def shifted(x: Tensor, dilation: int, offsets: Sequence[tuple[int, int]]) -> Tensor:
    """``[B, K, H, W]`` -> ``[B, K, len(offsets), H, W]``: ``x`` read at ``p + dilation * offset``,
    replicate padding at the borders."""
    height, width = x.shape[-2:]
    padded = F.pad(x, [dilation] * 4, mode="replicate")
    views = [padded[..., dilation + dy * dilation: dilation + dy * dilation + height,
                    dilation + dx * dilation: dilation + dx * dilation + width] for dy, dx in offsets]
    return torch.stack(views, dim=2)


def pamr_affinity(image: Tensor, dilations: Sequence[int] = PAMR_DILATIONS) -> Tensor:
    """``[B, C, H, W]`` image -> ``[B, 1, 8 * len(dilations), H, W]`` softmax weights of the neighbours."""
    window = ((0, 0), *NEIGHBOURS)
    spread = torch.cat([shifted(image, d, window) for d in dilations], dim=2).std(dim=2, keepdim=True)
    neighbours = torch.cat([shifted(image, d, NEIGHBOURS) for d in dilations], dim=2)  # [B, C, P, H, W]
    logits = -(image[:, :, None] - neighbours).abs() / (1e-8 + 0.1 * spread)
    return torch.softmax(logits.mean(dim=1, keepdim=True), dim=2)


def pamr(
    image: Tensor,
    scores: Tensor,
    iterations: int = PAMR_ITERATIONS,
    dilations: Sequence[int] = PAMR_DILATIONS,
) -> Tensor:
    """Refine ``scores`` along the image's edges.

    Args:
        image: ``[B, C, H, W]`` float (any per-channel scaling; see the module docstring).
        scores: ``[B, K, h, w]`` score maps (resized to ``(H, W)`` first when they differ).
        iterations: propagation steps (``>= 1``).
        dilations: neighbour distances in pixels.

    Returns:
        ``[B, K, H, W]`` refined scores, in the dtype of ``scores``.
    """
    if image.ndim != 4 or scores.ndim != 4 or image.shape[0] != scores.shape[0]:
        raise RequestError(f"pamr takes image [B, C, H, W] and scores [B, K, h, w]; got {tuple(image.shape)} "
                           f"and {tuple(scores.shape)}")
    if iterations < 1 or not dilations or any(int(d) < 1 for d in dilations):
        raise RequestError(f"pamr: iterations={iterations}, dilations={tuple(dilations)}: expected >= 1 "
                           "iterations and positive dilations")
    dtype = scores.dtype
    scores = F.interpolate(scores.float(), size=image.shape[-2:], mode="bilinear", align_corners=True)
    weights = pamr_affinity(image.float(), [int(d) for d in dilations])  # [B, 1, P, H, W]
    for _ in range(iterations):
        neighbours = torch.cat([shifted(scores, int(d), NEIGHBOURS) for d in dilations], dim=2)
        scores = (neighbours * weights).sum(dim=2)
    return scores.to(dtype)
