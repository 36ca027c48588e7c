"""PAMR against a transcription of the reference module (wangf3014/SCLIP ``pamr.py``: 3x3 shift
kernels applied with ``F.conv2d(..., dilation=d)`` on replicate-padded maps)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from siglip2_dense.errors import RequestError
from siglip2_dense.openvocab.pamr import pamr

OFFSETS = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2)]


def kernel(kind: str) -> torch.Tensor:
    if kind == "std":  # LocalStDev: the nine positions
        weight = torch.zeros(9, 1, 3, 3)
        for i in range(9):
            weight[i, 0, i // 3, i % 3] = 1
        return weight
    weight = torch.zeros(8, 1, 3, 3)
    for i, (r, c) in enumerate(OFFSETS):
        if kind == "abs":  # LocalAffinity: centre 1, neighbour -1
            weight[i, 0, 1, 1] = 1
            weight[i, 0, r, c] = -1
        else:  # LocalAffinityCopy
            weight[i, 0, r, c] = 1
    return weight


def local(x: torch.Tensor, weight: torch.Tensor, dilations) -> torch.Tensor:
    batch, channels, height, width = x.shape
    x = x.view(batch * channels, 1, height, width)
    out = [F.conv2d(F.pad(x, [d] * 4, mode="replicate"), weight, dilation=d) for d in dilations]
    return torch.cat(out, 1).view(batch, channels, -1, height, width)


def reference_pamr(x: torch.Tensor, mask: torch.Tensor, num_iter: int, dilations) -> torch.Tensor:
    mask = F.interpolate(mask, size=x.size()[-2:], mode="bilinear", align_corners=True)
    x_std = local(x, kernel("std"), dilations).std(2, keepdim=True)
    x = -local(x, kernel("abs"), dilations).abs() / (1e-8 + 0.1 * x_std)
    x = F.softmax(x.mean(1, keepdim=True), 2)
    for _ in range(num_iter):
        mask = (local(mask, kernel("copy"), dilations) * x).sum(2)
    return mask


@pytest.mark.parametrize("dilations", [(1,), (2, 3), (8, 16)])
def test_pamr_matches_the_reference(dilations):
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 37, 29, generator=generator) * 255
    scores = torch.randn(2, 5, 37, 29, generator=generator)
    expected = reference_pamr(image, scores, 10, dilations)
    got = pamr(image, scores, iterations=10, dilations=dilations)
    assert got.shape == (2, 5, 37, 29)
    assert (got - expected).abs().max() <= 1e-5
    assert (got - scores).abs().max() > 0.1  # it does refine


def test_pamr_resizes_the_scores_and_ignores_channel_scaling():
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 24, 20, generator=generator)
    coarse = torch.randn(1, 4, 6, 5, generator=generator)
    expected = reference_pamr(image, coarse, 3, (1, 2))
    assert (pamr(image, coarse, 3, (1, 2)) - expected).abs().max() <= 1e-5
    scaled = (image - torch.tensor([0.4, 0.5, 0.6])[:, None, None]) / torch.tensor([0.2, 0.3, 0.25])[:, None, None]
    assert (pamr(scaled.flip(1), coarse, 3, (1, 2)) - expected).abs().max() <= 1e-4


def test_pamr_refuses_bad_settings():
    with pytest.raises(RequestError, match="iterations"):
        pamr(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 4), iterations=0)
    with pytest.raises(RequestError, match=r"image \[B, C, H, W\]"):
        pamr(torch.zeros(3, 4, 4), torch.zeros(1, 2, 4, 4))
