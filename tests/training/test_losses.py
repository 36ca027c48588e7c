"""Losses against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from siglip2_dense.errors import RequestError
from siglip2_dense.losses import (
    depth_loss,
    gradient_matching_loss,
    segmentation_cross_entropy,
    silog_loss,
)


def cross_entropy_by_hand(logits: list[float], label: int) -> float:
    return -logits[label] + math.log(sum(math.exp(v) for v in logits))


def test_cross_entropy_upsamples_logits_bilinearly_and_skips_ignored_pixels():
    # one row of two patches, classes (a, b); the target is 1 x 4 pixels
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 4.0]]]])  # [1, 2, 1, 2]
    target = torch.tensor([[[0, 1, 255, 1]]])
    # align_corners=False, 2 -> 4: pixel x samples (x + 0.5) / 2 - 0.5 -> -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    upsampled = [[2.0, 0.0], [1.5, 1.0], [0.5, 3.0], [0.0, 4.0]]
    terms = [cross_entropy_by_hand(upsampled[0], 0), cross_entropy_by_hand(upsampled[1], 1),
             cross_entropy_by_hand(upsampled[3], 1)]
    target = target.expand(1, 2, 4)  # two identical rows: the mean is unchanged
    loss = segmentation_cross_entropy(logits.expand(1, 2, 2, 2), target, ignore_index=255)
    assert loss.item() == pytest.approx(sum(terms) / 3, rel=1e-6)
    over_all = segmentation_cross_entropy(logits.expand(1, 2, 2, 2), target, average_over_valid=False)
    assert over_all.item() == pytest.approx(sum(terms) / 4, rel=1e-6)


def test_cross_entropy_with_every_pixel_ignored_is_zero_and_differentiable():
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    loss = segmentation_cross_entropy(logits, torch.full((2, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0 and logits.grad is not None and logits.grad.abs().sum() == 0
    with pytest.raises(RequestError, match=r"\[B, K, h, w\]"):
        segmentation_cross_entropy(torch.randn(3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_silog_by_hand_over_valid_pixels_only():
    prediction = torch.tensor([[[1.0, 2.0, 4.0, 123.0, 0.5]]])  # [1, 1, 5]
    target = torch.tensor([[[1.0, 1.0, 1.0, 0.0, 20.0]]])  # the last two are outside (1e-3, 10)
    g = [0.0, math.log(2), math.log(4)]
    mean, second = sum(g) / 3, sum(v * v for v in g) / 3
    expected = 10 * math.sqrt(second - 0.85 * mean**2)
    assert silog_loss(prediction, target).item() == pytest.approx(expected, rel=1e-6)
    # the same as AdaBins / DINOv2's form with the population variance
    variance = second - mean**2
    assert expected == pytest.approx(10 * math.sqrt(variance + 0.15 * mean**2))
    # variance_focus 0 is the RMSE of log depth; 1 ignores a global scale
    assert silog_loss(prediction, target, variance_focus=0.0, scale=1.0).item() == pytest.approx(math.sqrt(second))
    scaled = silog_loss(prediction * 3.0, target, variance_focus=1.0)
    assert scaled.item() == pytest.approx(silog_loss(prediction, target, variance_focus=1.0).item(), rel=1e-5)


def test_silog_resizes_the_prediction_and_handles_no_valid_pixel():
    prediction = torch.full((2, 1, 2, 3), 2.0, requires_grad=True)  # constant: resizing keeps it 2
    target = torch.ones(2, 8, 12)
    expected = 10 * math.log(2) * math.sqrt(1 - 0.85)
    assert silog_loss(prediction, target).item() == pytest.approx(expected, rel=1e-6)
    empty = silog_loss(prediction, torch.zeros(2, 8, 12))
    empty.backward()
    assert empty.item() == 0 and torch.isfinite(prediction.grad).all()
    exact = torch.ones(1, 1, 2, 2, requires_grad=True)
    silog_loss(exact, torch.ones(1, 2, 2)).backward()
    assert torch.isfinite(exact.grad).all()


def test_gradient_matching_by_hand():
    e = math.e
    prediction = torch.tensor([[[1.0, e, e**3], [1.0, 1.0, 1.0]]])  # g = [[0, 1, 3], [0, 0, 0]] against ones
    target = torch.ones(1, 2, 3)
    # scale 1: |dx| = 1 + 2, |dy| = 0 + 1 + 3, six valid pixels
    assert gradient_matching_loss(prediction, target, num_scales=1).item() == pytest.approx(7 / 6, rel=1e-6)
    # scale 2 keeps row 0, columns 0 and 2: g = [0, 3], |dx| = 3 over two pixels
    assert gradient_matching_loss(prediction, target, num_scales=2).item() == pytest.approx(7 / 6 + 3 / 2, rel=1e-6)
    # an invalid pixel drops itself and every difference that touches it
    target[0, 0, 2] = 0.0
    assert gradient_matching_loss(prediction, target, num_scales=1).item() == pytest.approx(2 / 5, rel=1e-6)


def test_depth_loss_adds_the_weighted_gradient_term():
    prediction = torch.rand(2, 1, 4, 4) + 0.5
    target = torch.rand(2, 4, 4) * 5 + 0.1
    silog = silog_loss(prediction, target)
    gradient = gradient_matching_loss(prediction, target)
    assert depth_loss(prediction, target).item() == pytest.approx(silog.item(), rel=1e-6)
    combined = depth_loss(prediction, target, gradient_weight=0.5)
    assert combined.item() == pytest.approx(silog.item() + 0.5 * gradient.item(), rel=1e-6)
    assert gradient.item() > 0
