"""Normal losses: hand-computed values, parity with a transcription of Probe3D's ``angular_loss``, masking,
finite gradients at an exact prediction, resizing, and clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from siglip2_dense.errors import RequestError
from siglip2_dense.losses.normals import angular_loss, cosine_loss, normals_loss, uncertainty_angular_loss


def probe3d_angular_loss(snorm_pr, snorm_gt, mask, uncertainty_aware=False, eps=1e-4):
    """An independent transcription of mbanani/probe3d ``evals/utils/losses.py::angular_loss`` (channels first,
    ``mask [B, 1, H, W]``)."""
    mask = mask.squeeze(1).float()
    if uncertainty_aware:
        loss_ang = torch.cosine_similarity(snorm_pr[:, :3], snorm_gt, dim=1)
        loss_ang = loss_ang.clamp(min=-1 + eps, max=1 - eps).acos()
        kappa = torch.nn.functional.elu(snorm_pr[:, 3]) + 1.01
        kappa_reg = (1 + (-kappa * torch.pi).exp()).log() - (kappa.pow(2) + 1).log()
        loss = kappa_reg + kappa * loss_ang
    else:
        loss_ang = torch.cosine_similarity(snorm_pr, snorm_gt, dim=1)
        loss = loss_ang.clamp(min=-1 + eps, max=1 - eps).acos()
    return loss[mask.bool()].mean()


def tilted(degrees: float, height: int = 4, width: int = 5) -> torch.Tensor:
    """``[1, 3, H, W]``: the normal (0, 0, -1) turned by ``degrees`` about the x axis, everywhere."""
    angle = math.radians(degrees)
    return torch.tensor([0.0, math.sin(angle), -math.cos(angle)]).view(1, 3, 1, 1).expand(1, 3, height, width).clone()


def facing(height: int = 4, width: int = 5) -> torch.Tensor:
    """``[1, H, W, 3]`` ground truth: every pixel faces the camera."""
    return torch.tensor([0.0, 0.0, -1.0]).expand(1, height, width, 3).clone()


def random_batch(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    target = torch.nn.functional.normalize(torch.randn(2, 6, 7, 3, generator=gen), dim=-1)
    target[torch.rand(2, 6, 7, generator=gen) < 0.3] = 0.0
    prediction = torch.randn(2, 4, 6, 7, generator=gen)
    return prediction, target


def test_angular_and_cosine_losses_by_hand():
    assert float(angular_loss(tilted(10.0), facing())) == pytest.approx(math.radians(10.0), rel=1e-5)
    assert float(cosine_loss(tilted(60.0), facing())) == pytest.approx(0.5, rel=1e-5)
    # the uncertainty loss at logit 0: kappa = elu(0) + 1.01 = 1.01
    prediction = torch.cat([tilted(30.0), torch.zeros(1, 1, 4, 5)], dim=1)
    kappa = 1.01
    expected = math.log(1 + math.exp(-kappa * math.pi)) - math.log(kappa**2 + 1) + kappa * math.radians(30.0)
    assert float(uncertainty_angular_loss(prediction, facing())) == pytest.approx(expected, rel=1e-5)


def test_parity_with_probe3d_angular_loss():
    prediction, target = random_batch()
    mask = (target.norm(dim=-1) > 0)[:, None]
    channels_first = target.permute(0, 3, 1, 2)
    want_plain = probe3d_angular_loss(prediction[:, :3], channels_first, mask)
    want_uncertain = probe3d_angular_loss(prediction, channels_first, mask, uncertainty_aware=True)
    assert float(normals_loss(prediction[:, :3], target)) == pytest.approx(float(want_plain), rel=1e-6)
    assert float(normals_loss(prediction, target)) == pytest.approx(float(want_uncertain), rel=1e-6)


def test_missing_pixels_do_not_count():
    prediction, target = random_batch(seed=1)
    garbage = prediction.clone()
    missing = (target.norm(dim=-1) == 0)[:, None].expand_as(garbage)
    garbage[missing] = 1e3 * torch.randn(int(missing.sum()))
    for loss in (angular_loss, cosine_loss):
        assert float(loss(garbage[:, :3], target)) == pytest.approx(float(loss(prediction[:, :3], target)), rel=1e-6)
    nothing_valid = normals_loss(prediction[:, :3].requires_grad_(), torch.zeros_like(target))
    assert float(nothing_valid.detach()) == 0.0 and nothing_valid.requires_grad


def test_exact_prediction_has_finite_gradient():
    prediction = tilted(0.0).requires_grad_()
    loss = angular_loss(prediction, facing())
    loss.backward()
    assert float(loss.detach()) == pytest.approx(math.acos(1 - 1e-4), rel=1e-3)  # the clamp floor
    assert torch.isfinite(prediction.grad).all()


def test_prediction_is_resized_to_the_target():
    coarse = tilted(20.0, 2, 3)
    assert float(angular_loss(coarse, facing(8, 12))) == pytest.approx(math.radians(20.0), rel=1e-5)


def test_bad_inputs_are_refused():
    prediction, target = random_batch()
    with pytest.raises(RequestError, match="channels last"):
        angular_loss(prediction[:, :3], target.permute(0, 3, 1, 2))
    with pytest.raises(RequestError, match="3-channel heads"):
        normals_loss(prediction, target, loss="cosine")
    with pytest.raises(RequestError, match="expected one of angular, cosine"):
        normals_loss(prediction[:, :3], target, loss="l1")
