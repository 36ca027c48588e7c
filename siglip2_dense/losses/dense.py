"""Training losses for the dense heads: segmentation cross-entropy and depth losses.

Predictions come on the patch grid and targets at image resolution; every loss first resizes
the prediction bilinearly (``align_corners=False``) to the target's size, as mmsegmentation and
DINOv2's depth heads do. The prediction must cover exactly the target's extent: for a padded
batch, crop each image's real grid (``features.grid_sizes``) before calling these.

Depth losses work on ``g = log(pred) - log(gt)`` over the valid pixels,
``min_depth < gt < max_depth`` (NYUv2: 1e-3 < gt < 10), pooled over the whole batch.

Scale-invariant log loss (Eigen et al. 2014), in BTS's parameterisation::

    silog = scale * sqrt(mean(g^2) - variance_focus * mean(g)^2)
          = scale * sqrt(Var(g) + (1 - variance_focus) * mean(g)^2)     (Var with 1/N)

BTS uses ``variance_focus = 0.85, scale = 10``; ``variance_focus = 1`` gives the fully
scale-invariant loss, ``0`` the RMSE of log depth.

DINOv2's NYU configs (``form="dinov2"``) use a different loss, transcribed in
:mod:`siglip2_dense.losses.dinov2_depth`: ``loss_weight (1.0) * sqrt(Var_unbiased(g) + 0.15 mean(g)^2)``
on ``g = log(pred + 1e-3) - log(gt + 1e-3)`` over ``gt > 0``, mean term only for the first 100
iterations, plus ``0.5 x`` a GradientLoss whose slicing runs over the batch and channel axes.

Gradient matching (MiDaS, Ranftl et al. 2020, on the log difference): at scales
``s = 0 .. num_scales - 1`` the maps are subsampled with step ``2^s`` and the absolute differences
of ``g`` between horizontal and vertical neighbours that are both valid are summed and divided
by the number of valid pixels at that scale; the scales are added up.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from siglip2_dense.errors import RequestError


def resize_to(prediction: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``prediction [B, C, h, w]`` to ``size`` (``align_corners=False``); as is if equal."""
    if tuple(prediction.shape[-2:]) == tuple(size):
        return prediction
    return F.interpolate(prediction, size=size, mode="bilinear", align_corners=False)


CE_AVERAGES = ("labelled_pixels", "all_pixels")


def cross_entropy_denominator(target: torch.Tensor, ignore_index: int = 255, average: str = "labelled_pixels") -> int:
    """What the summed per-pixel cross-entropy of ``target [..., H, W]`` is divided by.

    ``labelled_pixels``: the pixels not labelled ``ignore_index`` (PyTorch's ``ignore_index`` mean, mmseg
    ``avg_non_ignore=True``). ``all_pixels``: every pixel, ignored ones included: mmsegmentation's
    ``CrossEntropyLoss(avg_non_ignore=False)`` (its default, DINOv2's config) takes
    ``F.cross_entropy(..., reduction='none', ignore_index=255)`` (0 at ignored pixels) and then
    ``weight_reduce_loss(..., reduction='mean', avg_factor=None)`` = ``loss.mean()`` over all pixels
    (open-mmlab/mmsegmentation mmseg/models/losses/cross_entropy_loss.py ``cross_entropy``); DINOv3's
    segmentation loss does the same (dinov3/eval/segmentation/loss.py).
    """
    if average not in CE_AVERAGES:
        raise RequestError(f"cross-entropy average={average!r}; expected one of {', '.join(CE_AVERAGES)}")
    if average == "all_pixels":
        return int(target.numel())
    return int((target != ignore_index).sum())


def segmentation_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    average_over_valid: bool = True,
) -> torch.Tensor:
    """Per-pixel cross-entropy of ``logits [B, K, h, w]`` against ``target [B, H, W]`` (long).

    The logits are upsampled to ``(H, W)`` first. Pixels labelled ``ignore_index`` contribute
    nothing. ``average_over_valid=True`` averages over the other pixels (PyTorch's rule,
    mmsegmentation's ``avg_non_ignore=True``); False averages over all pixels, ignored ones
    included (mmsegmentation's default). A batch with no valid pixel gives 0 (with a graph).
    """
    if logits.ndim != 4 or target.ndim != 3 or logits.shape[0] != target.shape[0]:
        raise RequestError(
            f"segmentation_cross_entropy: logits {tuple(logits.shape)}, target {tuple(target.shape)}; "
            "expected [B, K, h, w] and [B, H, W]"
        )
    logits = resize_to(logits.float(), tuple(target.shape[-2:]))
    per_pixel = F.cross_entropy(logits, target.long(), ignore_index=ignore_index, reduction="none")
    count = cross_entropy_denominator(target, ignore_index, "labelled_pixels" if average_over_valid else "all_pixels")
    return per_pixel.sum() / max(count, 1)


def one_hot_binary_cross_entropy_sum(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """CAT-Seg's segmentation loss, summed: binary cross-entropy of every class's logit against the one-hot
    target, ``logits [B, K, H, W]`` (at the target's size), ``target [B, H, W]`` long.

    An ignored pixel is a negative for every class (CAT-Seg ``cat_seg/cat_seg_model.py``: ``_targets =
    zeros``; the one-hot rows written only where ``targets != ignore_value``;
    ``F.binary_cross_entropy_with_logits(outputs, _targets)``, the mean over all ``B * H * W * K``
    entries). Divide by ``B * H * W * K`` for CAT-Seg's mean.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise RequestError(f"one_hot_binary_cross_entropy_sum: logits {tuple(logits.shape)}, target "
                           f"{tuple(target.shape)}; expected [B, K, H, W] and [B, H, W]")
    classes = torch.arange(logits.shape[1], device=target.device)[None, :, None, None]
    one_hot = (target[:, None] == classes) & (target[:, None] != ignore_index)
    return F.binary_cross_entropy_with_logits(logits, one_hot.to(logits.dtype), reduction="sum")


def _depth_pair(
    prediction: torch.Tensor, target: torch.Tensor, min_depth: float, max_depth: float, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log(pred) - log(gt) [B, H, W], valid [B, H, W])``, the prediction resized to the target."""
    if prediction.ndim == 3:
        prediction = prediction[:, None]
    if target.ndim == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if prediction.ndim != 4 or prediction.shape[1] != 1 or target.ndim != 3 or prediction.shape[0] != target.shape[0]:
        raise RequestError(
            f"{where}: prediction {tuple(prediction.shape)}, target {tuple(target.shape)}; expected "
            "[B, 1, h, w] (or [B, h, w]) and [B, H, W] (or [B, 1, H, W]) in metres"
        )
    prediction = resize_to(prediction.float(), tuple(target.shape[-2:]))[:, 0]
    target = target.float()
    valid = (target > min_depth) & (target < max_depth)
    safe_prediction = torch.where(valid, prediction, torch.ones_like(prediction))
    safe_target = torch.where(valid, target, torch.ones_like(target))
    return torch.log(safe_prediction) - torch.log(safe_target), valid


def silog_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    variance_focus: float = 0.85,
    scale: float = 10.0,
) -> torch.Tensor:
    """Scale-invariant log loss ``scale * sqrt(mean(g^2) - variance_focus * mean(g)^2)`` (BTS).

    Args:
        prediction: depth ``[B, 1, h, w]`` or ``[B, h, w]`` in metres, positive where the target is valid.
        target: depth ``[B, H, W]`` or ``[B, 1, H, W]``; pixels outside ``(min_depth, max_depth)`` are ignored.

    Returns:
        A scalar; 0 (with a graph) when no pixel is valid. The square root's argument is floored at
        1e-12, so an exact prediction gives a finite (zero) gradient.
    """
    if not 0.0 <= variance_focus <= 1.0:
        raise RequestError(f"silog_loss: variance_focus={variance_focus}; expected a value in [0, 1]")
    g, valid = _depth_pair(prediction, target, min_depth, max_depth, "silog_loss")
    count = valid.sum()
    if int(count) == 0:
        return g.sum() * 0.0
    g = g[valid]
    second_moment = g.square().mean()
    return scale * torch.sqrt((second_moment - variance_focus * g.mean().square()).clamp_min(1e-12))


def gradient_matching_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    num_scales: int = 4,
) -> torch.Tensor:
    """MiDaS multi-scale gradient matching on ``g = log(pred) - log(gt)``.

    ``sum over s of (sum |dg/dx| + sum |dg/dy|) / (valid pixels at scale s)``, with the maps
    subsampled by ``2^s`` and each difference counted only where both neighbours are valid.
    Shapes as :func:`silog_loss`. Scales without a valid pixel contribute 0.
    """
    if num_scales < 1:
        raise RequestError(f"gradient_matching_loss: num_scales={num_scales}; expected at least 1")
    g, valid = _depth_pair(prediction, target, min_depth, max_depth, "gradient_matching_loss")
    total = g.sum() * 0.0
    for level in range(num_scales):
        step = 2**level
        g_s, valid_s = g[:, ::step, ::step], valid[:, ::step, ::step]
        g_s = torch.where(valid_s, g_s, torch.zeros_like(g_s))
        dx = (g_s[:, :, 1:] - g_s[:, :, :-1]).abs() * (valid_s[:, :, 1:] & valid_s[:, :, :-1])
        dy = (g_s[:, 1:, :] - g_s[:, :-1, :]).abs() * (valid_s[:, 1:, :] & valid_s[:, :-1, :])
        count = valid_s.sum()
        if int(count) > 0:
            total = total + (dx.sum() + dy.sum()) / count
    return total


DEPTH_LOSS_FORMS = ("bts", "dinov2")


def depth_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    min_depth: float = 1e-3,
    max_depth: float = 10.0,
    variance_focus: float = 0.85,
    scale: float = 10.0,
    gradient_weight: float = 0.0,
    num_scales: int = 4,
    form: str = "bts",
    step: int = 0,
    warm_up_iterations: int = 0,
    images_per_group: int | None = None,
) -> torch.Tensor:
    """The depth training loss of one batch ``prediction [B, 1, h, w]`` against ``target [B, H, W]``.

    ``form="bts"``: ``silog_loss + gradient_weight * gradient_matching_loss`` (the second only when
    the weight is not 0); ``step``, ``warm_up_iterations`` and ``images_per_group`` must stay unset.

    ``form="dinov2"``: :func:`siglip2_dense.losses.dinov2_depth.dinov2_depth_loss` with
    ``loss_weight=scale``, ``gradient_weight``, the mean-only warm-up while ``step <
    warm_up_iterations`` and the batch cut into groups of ``images_per_group`` (DINOv2's images
    per GPU, 2: each GPU's loss on its own images, the groups' losses averaged as DDP averages
    gradients). Pixels count where ``gt > 0`` (DINOv2's ``valid_mask``); ``min_depth`` /
    ``max_depth`` are not used by this form (``variance_focus`` and ``num_scales`` neither:
    DINOv2's 0.15 and 4 scales are fixed in its code).
    """
    if form not in DEPTH_LOSS_FORMS:
        raise RequestError(f"depth_loss: form={form!r}; expected one of {', '.join(DEPTH_LOSS_FORMS)}")
    if form == "dinov2":
        from siglip2_dense.losses.dinov2_depth import dinov2_depth_loss

        return dinov2_depth_loss(prediction, target, loss_weight=scale, gradient_weight=gradient_weight,
                                 warm_up=step < warm_up_iterations, images_per_group=images_per_group)
    if warm_up_iterations or images_per_group is not None:
        raise RequestError("depth_loss: warm_up_iterations and images_per_group belong to form='dinov2'")
    loss = silog_loss(prediction, target, min_depth, max_depth, variance_focus, scale)
    if gradient_weight:
        loss = loss + gradient_weight * gradient_matching_loss(prediction, target, min_depth, max_depth, num_scales)
    return loss
