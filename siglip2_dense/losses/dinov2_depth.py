"""DINOv2's NYUv2 depth loss, as its configs and code compute it (``train.loss_args.form: dinov2``).

DINOv2's NYU linear and DPT configs (official ``dinov2_vitb14_nyu_linear_config.py``; read in the copy
Jiawei-Yang/Denoising-ViT ``evaluation/configs/vitb_nyu_linear_config.py:156-169`` @2d08bd84) train with::

    loss_decode=[SigLoss(valid_mask=True, loss_weight=1.0, warm_up=True),
                 GradientLoss(valid_mask=True, loss_weight=0.5)]

on ``samples_per_gpu=2`` images per GPU, the prediction resized bilinearly to the ground truth first
(facebookresearch/dinov2 ``dinov2/eval/depth/models/decode_heads/decode_head.py``, ``losses``).

SigLoss (``dinov2/eval/depth/models/losses/sigloss.py:27-58``): over the pixels with ``gt > 0``,
``g = log(pred + 0.001) - log(gt + 0.001)``; ``sqrt(0.15 * mean(g)^2)`` for the first ``warm_iter = 100``
calls (one per iteration), then ``sqrt(Var(g) + 0.15 * mean(g)^2)`` with PyTorch's unbiased variance.

GradientLoss (``dinov2/eval/depth/models/losses/gradientloss.py:34-61``) slices its ``[B, 1, H, W]``
inputs as if they were ``[H, W]``: ``input[::2*i, ::2*i]`` steps over the batch and channel axes,
and the "vertical" and "horizontal" differences ``d[0:-2] - d[2:]``, ``d[:, 0:-2] - d[:, 2:]`` pair
image ``b`` with image ``b + 2`` and channel ``c`` with ``c + 2``. With one channel and 2 images per
GPU there is no such pair: the term is identically 0 in DINOv2's runs. :func:`reference_gradient_loss`
computes exactly that quantity (non-zero only for groups of 3 or more images), so a config that
names DINOv2's loss gets DINOv2's (vanishing) gradient term, not an image-gradient loss.
"""

from __future__ import annotations

import torch

from siglip2_dense.errors import RequestError
from siglip2_dense.losses.dense import resize_to

LOG_EPS = 1e-3  # sigloss.py / gradientloss.py: self.eps = 0.001  # avoid grad explode
MEAN_WEIGHT = 0.15  # sigloss.py: 0.15 * torch.pow(torch.mean(g), 2)
GRADIENT_STEPS = (1, 2, 4, 6)  # gradientloss.py: [input] + [input[::2 * i, ::2 * i] for i in range(1, 4)]


def _as_4d(prediction: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, 1, H, W], [B, 1, H, W])`` float32, the prediction resized to the target (bilinear)."""
    if prediction.ndim == 3:
        prediction = prediction[:, None]
    if target.ndim == 3:
        target = target[:, None]
    if prediction.ndim != 4 or target.ndim != 4 or prediction.shape[:2] != target.shape[:2]:
        raise RequestError(
            f"dinov2_depth_loss: prediction {tuple(prediction.shape)}, target {tuple(target.shape)}; expected "
            "[B, 1, h, w] and [B, 1, H, W] (or without the channel axis) in metres"
        )
    return resize_to(prediction.float(), tuple(target.shape[-2:])), target.float()


def dinov2_sigloss(prediction: torch.Tensor, target: torch.Tensor, warm_up: bool = False) -> torch.Tensor:
    """DINOv2's SigLoss of one GPU's images (weight 1): ``sqrt(Var(g) + 0.15 mean(g)^2)``, or the mean term alone.

    Args:
        prediction: ``[B, 1, H, W]`` depth in metres at the target's size.
        target: ``[B, 1, H, W]``; pixels with ``gt > 0`` count.
        warm_up: the first ``warm_iter`` iterations: ``sqrt(0.15 mean(g)^2)``.

    Returns a scalar. A group without a valid pixel gives 0 (DINOv2 would return NaN); a group with one
    valid pixel has an undefined unbiased variance (NaN, as DINOv2).
    """
    valid = target > 0
    if not bool(valid.any()):
        return prediction.sum() * 0.0
    g = torch.log(prediction[valid] + LOG_EPS) - torch.log(target[valid] + LOG_EPS)
    mean_term = MEAN_WEIGHT * g.mean().square()
    if warm_up:
        return torch.sqrt(mean_term)
    return torch.sqrt(torch.var(g) + mean_term)


def _paired_differences(values: torch.Tensor, mask: torch.Tensor, axis: int) -> torch.Tensor:
    """``sum |values[i] - values[i + 2]|`` along ``axis`` where both masks hold (0 when the axis is shorter than 3)."""
    length = values.shape[axis]
    if length < 3:
        return values.sum() * 0.0
    first, second = values.narrow(axis, 0, length - 2), values.narrow(axis, 2, length - 2)
    both = mask.narrow(axis, 0, length - 2) & mask.narrow(axis, 2, length - 2)
    return ((first - second).abs() * both).sum()


def reference_gradient_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DINOv2's GradientLoss (weight 1) on ``[B, 1, H, W]`` tensors, computing what its slicing computes.

    For each step ``s`` in 1, 2, 4, 6: keep every ``s``-th image and channel; ``d = (log(pred + 1e-3) -
    log(gt + 1e-3)) * valid``; add ``(sum over images two apart + sum over channels two apart of
    |d_i - d_(i+2)|, where both are valid) / (valid pixels kept)``. 0 for groups of at most 2 images.
    """
    total = prediction.sum() * 0.0
    for step in GRADIENT_STEPS:
        kept_prediction, kept_target = prediction[::step, ::step], target[::step, ::step]
        valid = kept_target > 0
        count = valid.sum()
        if int(count) == 0:
            continue
        log_difference = (torch.log(kept_prediction + LOG_EPS) - torch.log(kept_target + LOG_EPS)) * valid
        pairs = _paired_differences(log_difference, valid, 0) + _paired_differences(log_difference, valid, 1)
        total = total + pairs / count
    return total


def dinov2_depth_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    loss_weight: float = 1.0,
    gradient_weight: float = 0.5,
    warm_up: bool = False,
    images_per_group: int | None = 2,
) -> torch.Tensor:
    """``loss_weight * SigLoss + gradient_weight * GradientLoss``, per group of images, averaged over groups.

    Args:
        prediction: ``[B, 1, h, w]`` (or ``[B, h, w]``) depth in metres on any grid; resized to the target.
        target: ``[B, H, W]`` (or ``[B, 1, H, W]``) ground truth, 0 where missing.
        loss_weight, gradient_weight: DINOv2's NYU configs: 1.0 and 0.5.
        warm_up: SigLoss's mean-only warm-up (the first 100 iterations in DINOv2).
        images_per_group: DINOv2's images per GPU (``samples_per_gpu=2``); each GPU's loss is taken on
            its own images and DDP averages the gradients, so the groups' losses are averaged. None:
            the whole batch is one group.
    """
    prediction, target = _as_4d(prediction, target)
    batch = prediction.shape[0]
    size = batch if images_per_group is None else int(images_per_group)
    if size < 1 or batch % size:
        raise RequestError(f"dinov2_depth_loss: images_per_group={images_per_group} does not divide the batch of "
                           f"{batch} images; expected a divisor (DINOv2: 2 per GPU)")
    losses = []
    for start in range(0, batch, size):
        group_prediction, group_target = prediction[start : start + size], target[start : start + size]
        loss = loss_weight * dinov2_sigloss(group_prediction, group_target, warm_up)
        if gradient_weight:
            loss = loss + gradient_weight * reference_gradient_loss(group_prediction, group_target)
        losses.append(loss)
    return torch.stack(losses).mean()
