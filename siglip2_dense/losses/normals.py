"""Training losses for surface-normal heads: angular, cosine, and Probe3D's uncertainty-aware angular loss.

Predictions come on the patch grid ``[B, C, h, w]`` (C = 3 normals, or 4 with a concentration logit) and
targets at image resolution, channels last ``[B, H, W, 3]`` (the data sets' ``"normals"``, zero where
missing); the prediction is resized bilinearly (``align_corners=False``) to the target's size first, as
the other losses of :mod:`siglip2_dense.losses`. Valid pixels are those whose target vector is longer than
:data:`~siglip2_dense.evaluation.normals.VALID_NORM`; every loss averages over the valid pixels of the
whole batch (Probe3D: ``loss[mask].mean()``) and is 0, with a graph, when there are none.

Transcribed from Probe3D (github.com/mbanani/probe3d, ``evals/utils/losses.py::angular_loss``, used by
``train_snorm.py``), after Bae et al. (ICCV 2021, "Estimating and exploiting the aleatoric uncertainty in
surface normal estimation"):

- angular: ``theta = acos(clamp(cos(pred, gt), -1 + eps, 1 - eps))`` in radians, ``eps = 1e-4`` (the clamp
  keeps the gradient of ``acos`` finite at an exact prediction);
- uncertainty-aware (4 channels): ``kappa = elu(x_4) + 1.01`` (concentration >= 0.01) and the angular
  von Mises-Fisher negative log-likelihood ``log(1 + exp(-kappa * pi)) - log(kappa**2 + 1) + kappa * theta``;
- cosine: ``1 - cos(pred, gt)`` (the dot-product loss of the DPT / Omnidata lineage), no clamp needed.

Probe3D picks the uncertainty-aware loss whenever the prediction has more than 3 channels; so does
:func:`normals_loss`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from siglip2_dense.errors import RequestError
from siglip2_dense.evaluation.normals import valid_normal_mask
from siglip2_dense.losses.dense import resize_to

NORMALS_LOSSES = ("angular", "cosine")
ANGULAR_EPS = 1e-4  # Probe3D's clamp of the cosine away from +-1
MIN_CONCENTRATION = 1.01  # kappa = elu(x) + 1.01 >= 0.01, as Probe3D / Bae et al.


def concentration_from_logit(logit: torch.Tensor) -> torch.Tensor:
    """The von Mises-Fisher concentration of the 4th output channel: ``elu(logit) + 1.01`` (> 0.01)."""
    return F.elu(logit) + MIN_CONCENTRATION


def _normals_pair(
    prediction: torch.Tensor, target: torch.Tensor, channels: tuple[int, ...], where: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(prediction [B, C, H, W] resized, target [B, 3, H, W], valid [B, H, W])`` after checking the shapes."""
    if (prediction.ndim != 4 or prediction.shape[1] not in channels or target.ndim != 4 or target.shape[-1] != 3
            or prediction.shape[0] != target.shape[0]):
        raise RequestError(
            f"{where}: prediction {tuple(prediction.shape)}, target {tuple(target.shape)}; expected "
            f"[B, {' or '.join(map(str, channels))}, h, w] and [B, H, W, 3] (normals, channels last)"
        )
    prediction = resize_to(prediction.float(), tuple(target.shape[1:3]))
    target = target.float().permute(0, 3, 1, 2)
    return prediction, target, valid_normal_mask(target.permute(0, 2, 3, 1))


def _masked_mean(per_pixel: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    if not bool(valid.any()):
        return per_pixel.sum() * 0.0
    return per_pixel[valid].mean()


def angular_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = ANGULAR_EPS) -> torch.Tensor:
    """Mean angle in radians between ``prediction [B, 3, h, w]`` and ``target [B, H, W, 3]`` over valid pixels."""
    prediction, target, valid = _normals_pair(prediction, target, (3,), "angular_loss")
    cosine = torch.cosine_similarity(prediction, target, dim=1).clamp(-1 + eps, 1 - eps)
    return _masked_mean(torch.acos(cosine), valid)


def cosine_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean ``1 - cos`` between ``prediction [B, 3, h, w]`` and ``target [B, H, W, 3]`` over valid pixels."""
    prediction, target, valid = _normals_pair(prediction, target, (3,), "cosine_loss")
    return _masked_mean(1.0 - torch.cosine_similarity(prediction, target, dim=1), valid)


def uncertainty_angular_loss(
    prediction: torch.Tensor, target: torch.Tensor, eps: float = ANGULAR_EPS
) -> torch.Tensor:
    """Probe3D's uncertainty-aware angular loss of ``prediction [B, 4, h, w]`` (normal + concentration logit).

    ``log(1 + exp(-kappa * pi)) - log(kappa**2 + 1) + kappa * theta`` averaged over valid pixels, with
    ``kappa = elu(x_4) + 1.01`` and ``theta`` the clamped angle of :func:`angular_loss`.
    """
    prediction, target, valid = _normals_pair(prediction, target, (4,), "uncertainty_angular_loss")
    theta = torch.acos(torch.cosine_similarity(prediction[:, :3], target, dim=1).clamp(-1 + eps, 1 - eps))
    kappa = concentration_from_logit(prediction[:, 3])
    regulariser = torch.log1p(torch.exp(-kappa * math.pi)) - torch.log(kappa.square() + 1.0)
    return _masked_mean(regulariser + kappa * theta, valid)


def normals_loss(prediction: torch.Tensor, target: torch.Tensor, loss: str = "angular") -> torch.Tensor:
    """The training loss of a normals head (``train.loss_args`` of a ``task: normals`` run).

    Args:
        prediction: ``[B, 3, h, w]`` normals, or ``[B, 4, h, w]`` with a concentration logit: then the
            uncertainty-aware angular loss, whatever ``loss`` says (as Probe3D), and ``loss`` must be
            ``"angular"``.
        target: ``[B, H, W, 3]`` ground-truth normals, zero where missing.
        loss: ``"angular"`` (Probe3D) or ``"cosine"``.
    """
    if loss not in NORMALS_LOSSES:
        raise RequestError(f"normals_loss: loss={loss!r}; expected one of {', '.join(NORMALS_LOSSES)}")
    if prediction.ndim == 4 and prediction.shape[1] == 4:
        if loss != "angular":
            raise RequestError("normals_loss: a head with an uncertainty channel trains with the uncertainty-aware "
                               f"angular loss; loss={loss!r} is for 3-channel heads")
        return uncertainty_angular_loss(prediction, target)
    return angular_loss(prediction, target) if loss == "angular" else cosine_loss(prediction, target)
