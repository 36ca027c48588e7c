"""DINOv2's depth loss against a line-by-line transcription of its reference code (hand-copied below from
facebookresearch/dinov2 dinov2/eval/depth/models/losses/{sigloss.py,gradientloss.py}), on 2 and 4 images."""

from __future__ import annotations

import pytest
import torch

from siglip2_dense.losses import depth_loss
from siglip2_dense.losses.dinov2_depth import dinov2_depth_loss, dinov2_sigloss, reference_gradient_loss


class ReferenceSigLoss:
    """sigloss.py, valid_mask=True, max_depth=None, warm_up=True, warm_iter=100 (the counter as written)."""

    def __init__(self, warm_iter: int = 100) -> None:
        self.eps, self.warm_iter, self.warm_up_counter = 0.001, warm_iter, 0

    def __call__(self, input, target):
        valid_mask = target > 0
        input, target = input[valid_mask], target[valid_mask]
        if self.warm_up_counter < self.warm_iter:
            g = torch.log(input + self.eps) - torch.log(target + self.eps)
            g = 0.15 * torch.pow(torch.mean(g), 2)
            self.warm_up_counter += 1
            return torch.sqrt(g)
        g = torch.log(input + self.eps) - torch.log(target + self.eps)
        Dg = torch.var(g) + 0.15 * torch.pow(torch.mean(g), 2)
        return torch.sqrt(Dg)


def reference_gradientloss(input, target):
    """gradientloss.py, valid_mask=True, max_depth=None, on [B, 1, H, W] as DINOv2 calls it."""
    eps = 0.001
    input_downscaled = [input] + [input[:: 2 * i, :: 2 * i] for i in range(1, 4)]
    target_downscaled = [target] + [target[:: 2 * i, :: 2 * i] for i in range(1, 4)]
    gradient_loss = 0
    for input, target in zip(input_downscaled, target_downscaled):
        mask = target > 0
        N = torch.sum(mask)
        log_d_diff = torch.log(input + eps) - torch.log(target + eps)
        log_d_diff = torch.mul(log_d_diff, mask)
        v_gradient = torch.abs(log_d_diff[0:-2, :] - log_d_diff[2:, :])
        v_mask = torch.mul(mask[0:-2, :], mask[2:, :])
        v_gradient = torch.mul(v_gradient, v_mask)
        h_gradient = torch.abs(log_d_diff[:, 0:-2] - log_d_diff[:, 2:])
        h_mask = torch.mul(mask[:, 0:-2], mask[:, 2:])
        h_gradient = torch.mul(h_gradient, h_mask)
        gradient_loss += (torch.sum(h_gradient) + torch.sum(v_gradient)) / N
    return gradient_loss


def depth_pair(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    prediction = 0.5 + 4 * torch.rand(batch, 1, 12, 16, generator=generator, dtype=torch.float64)
    target = 0.5 + 4 * torch.rand(batch, 1, 12, 16, generator=generator, dtype=torch.float64)
    target[torch.rand(target.shape, generator=generator) < 0.2] = 0.0  # missing ground truth
    return prediction, target


def test_sigloss_with_warm_up_equals_the_reference_call_by_call():
    prediction, target = depth_pair(2, seed=0)
    reference = ReferenceSigLoss(warm_iter=3)
    for step in range(5):
        ours = depth_loss(prediction, target[:, 0], form="dinov2", scale=1.0, gradient_weight=0.0, step=step,
                          warm_up_iterations=3, images_per_group=2)
        theirs = reference(prediction, target)
        assert float((ours - theirs).abs()) < 1e-7  # ours in float32, the reference in float64
    warm, full = dinov2_sigloss(prediction, target, True), dinov2_sigloss(prediction, target, False)
    assert float(full) > float(warm) > 0  # the variance term arrives after the warm-up


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 7])
def test_gradient_loss_as_written(batch):
    prediction, target = depth_pair(batch, seed=batch)
    ours, theirs = reference_gradient_loss(prediction, target), reference_gradientloss(prediction, target)
    assert float((ours - theirs).abs()) < 1e-12
    if batch <= 2:
        assert float(ours) == 0.0  # no pair of images two apart: DINOv2's 2-images-per-GPU term vanishes
    else:
        assert float(ours) > 0.0


def test_groups_of_two_average_each_gpu_loss():
    prediction, target = depth_pair(4, seed=5)
    per_gpu = [ReferenceSigLoss(warm_iter=0)(prediction[i : i + 2], target[i : i + 2])
               + 0.5 * reference_gradientloss(prediction[i : i + 2], target[i : i + 2]) for i in (0, 2)]
    ours = dinov2_depth_loss(prediction, target, loss_weight=1.0, gradient_weight=0.5, images_per_group=2)
    assert float((ours - (per_gpu[0] + per_gpu[1]) / 2).abs()) < 1e-6
    whole = dinov2_depth_loss(prediction, target, images_per_group=None)
    assert float((whole - ours).abs()) > 1e-6  # pooling all four is a different loss


def test_prediction_on_a_coarser_grid_is_resized_to_the_target_first():
    prediction, target = depth_pair(2, seed=7)
    coarse = prediction[:, :, ::2, ::2].float()
    resized = torch.nn.functional.interpolate(coarse, size=(12, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(dinov2_depth_loss(coarse, target.float()), dinov2_depth_loss(resized, target.float()))
