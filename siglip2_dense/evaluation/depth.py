"""Monocular-depth metrics, exactly as BTS's ``compute_errors`` / ``eval`` (NYUv2 Eigen protocol).

Per image: the prediction is clamped to ``[min_depth, max_depth]`` (``+inf`` -> max, ``-inf`` -> min,
NaN -> min, as BTS), the valid pixels are those with ``min_depth < gt < max_depth`` inside the
evaluation crop, and the nine errors of BTS are computed over them; the data-set numbers are the
means of the per-image numbers. An image with no valid pixel is skipped and counted in ``skipped``
(BTS would produce NaN for it).

Deliberate differences from BTS, none of which changes a number on valid data: the arithmetic is
float64 (BTS mixes float32), and ``silog``'s variance ``mean(err**2) - mean(err)**2`` is clamped at 0
before the square root, where a perfect up-to-scale prediction would make BTS take the root of a
rounding-error negative and print NaN.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from siglip2_dense.errors import DataError, RequestError

DEPTH_METRIC_NAMES = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
CROP_CHOICES = ("eigen", "garg", None)

# Eigen et al. (NIPS 2014) NYUv2 crop, rows [45, 471) and columns [41, 601) of a 480 x 640 image.
EIGEN_CROP_480x640 = (45, 471, 41, 601)
# Garg et al. (ECCV 2016) crop, as fractions of height and width (BTS's constants).
GARG_CROP_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


def compute_depth_errors(gt: Tensor, pred: Tensor) -> dict[str, Tensor]:
    """BTS ``compute_errors`` over the valid pixels of one image.

    Args:
        gt: ground-truth depths ``[N]`` (metres, all > 0).
        pred: predicted depths ``[N]`` (metres, all > 0, already clamped).

    Returns:
        dict of 0-dim float64 tensors: ``d1, d2, d3`` (fraction of pixels with
        ``max(gt/pred, pred/gt) < 1.25, 1.25**2, 1.25**3``), ``abs_rel = mean(|gt-pred|/gt)``,
        ``sq_rel = mean((gt-pred)**2/gt)``, ``rmse = sqrt(mean((gt-pred)**2))``,
        ``rmse_log = sqrt(mean((log gt - log pred)**2))``, ``log10 = mean(|log10 pred - log10 gt|)``,
        ``silog = sqrt(mean(err**2) - mean(err)**2) * 100`` with ``err = log pred - log gt``.
    """
    gt = gt.double().flatten()
    pred = pred.double().flatten()
    if gt.shape != pred.shape or gt.numel() == 0:
        raise DataError(
            f"need equal, non-empty pixel lists, got gt {tuple(gt.shape)} and pred {tuple(pred.shape)}"
        )
    thresh = torch.maximum(gt / pred, pred / gt)
    log_err = torch.log(pred) - torch.log(gt)
    variance = (log_err**2).mean() - log_err.mean() ** 2
    return {
        "d1": (thresh < 1.25).double().mean(),
        "d2": (thresh < 1.25**2).double().mean(),
        "d3": (thresh < 1.25**3).double().mean(),
        "abs_rel": ((gt - pred).abs() / gt).mean(),
        "sq_rel": ((gt - pred) ** 2 / gt).mean(),
        "rmse": ((gt - pred) ** 2).mean().sqrt(),
        "rmse_log": (log_err**2).mean().sqrt(),
        "log10": (torch.log10(pred) - torch.log10(gt)).abs().mean(),
        "silog": variance.clamp(min=0).sqrt() * 100.0,
    }


def evaluation_crop_mask(
    height: int, width: int, crop: str | None, device: torch.device | None = None
) -> Tensor:
    """The evaluation region of an ``height x width`` depth map: bool ``[height, width]``.

    ``"eigen"`` is ``[45:471, 41:601]`` on 480 x 640, scaled proportionally (floor) to other sizes;
    ``"garg"`` is BTS's ``[int(0.40810811*H):int(0.99189189*H), int(0.03594771*W):int(0.96405229*W)]``;
    ``None`` keeps every pixel.
    """
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    if crop is None:
        mask[:] = True
    elif crop == "eigen":
        top, bottom, left, right = EIGEN_CROP_480x640
        mask[top * height // 480 : bottom * height // 480, left * width // 640 : right * width // 640] = True
    elif crop == "garg":
        top, bottom, left, right = GARG_CROP_FRACTIONS
        mask[int(top * height) : int(bottom * height), int(left * width) : int(right * width)] = True
    else:
        raise RequestError(f"crop must be one of {CROP_CHOICES}, got {crop!r}")
    return mask


def clamp_prediction(pred: Tensor, min_depth: float, max_depth: float) -> Tensor:
    """BTS's clamping: ``< min`` -> min, ``> max`` -> max, ``+inf`` -> max, ``-inf`` -> min, NaN -> min."""
    return torch.nan_to_num(pred, nan=min_depth, posinf=max_depth, neginf=min_depth).clamp(
        min_depth, max_depth
    )


class DepthEvaluator(Metric):
    """BTS's NYUv2 depth evaluation as a torchmetrics ``Metric`` (distributed sync for free).

    States: float64 sums of the nine per-image metrics, the number of evaluated images and the
    number of skipped images (no valid pixel), all reduced with ``sum`` across processes.

    Example:
        >>> dv = DepthEvaluator(min_depth=1e-3, max_depth=10.0, crop="eigen")
        >>> dv.update(pred, gt)          # float metres, [B, H, W] or [H, W] (or [B, 1, H, W])
        >>> dv.compute()["abs_rel"]
    """

    is_differentiable = False
    full_state_update = False

    def __init__(
        self, min_depth: float = 1e-3, max_depth: float = 10.0, crop: str | None = "eigen", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if crop not in CROP_CHOICES:
            raise RequestError(f"crop must be one of {CROP_CHOICES}, got {crop!r}")
        if not 0 < min_depth < max_depth:
            raise RequestError(
                f"need 0 < min_depth < max_depth, got min_depth={min_depth}, max_depth={max_depth}"
            )
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.crop = crop
        self.add_state(
            "metric_sums",
            default=torch.zeros(len(DEPTH_METRIC_NAMES), dtype=torch.float64),
            dist_reduce_fx="sum",
        )
        self.add_state("num_images", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_skipped", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one depth map ``[H, W]`` or a batch ``[B, H, W]`` / ``[B, 1, H, W]`` (float metres)."""
        pred, target = _as_batch(pred), _as_batch(target)
        if pred.shape != target.shape:
            raise DataError(
                f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}; "
                "resize the prediction to the depth map before evaluating"
            )
        target = target.to(pred.device)
        crop = evaluation_crop_mask(target.shape[-2], target.shape[-1], self.crop, device=target.device)
        sums = torch.zeros(len(DEPTH_METRIC_NAMES), dtype=torch.float64, device=pred.device)
        evaluated = skipped = 0
        for image_pred, image_gt in zip(pred, target):
            valid = (image_gt > self.min_depth) & (image_gt < self.max_depth) & crop
            if not bool(valid.any()):
                skipped += 1
                continue
            clamped = clamp_prediction(image_pred.double(), self.min_depth, self.max_depth)
            errors = compute_depth_errors(image_gt[valid], clamped[valid])
            sums = sums + torch.stack([errors[name] for name in DEPTH_METRIC_NAMES])
            evaluated += 1
        # out-of-place, so states created under torch.inference_mode() (by reset()) stay usable outside it
        self.metric_sums = self.metric_sums + sums.to(self.metric_sums.device)
        self.num_images = self.num_images + evaluated
        self.num_skipped = self.num_skipped + skipped

    def compute(self) -> dict[str, float]:
        """The nine metrics averaged over evaluated images (NaN if none), ``num_images`` and ``skipped``."""
        count = int(self.num_images)
        means = (self.metric_sums / count).tolist() if count else [math.nan] * len(DEPTH_METRIC_NAMES)
        result: dict[str, float] = dict(zip(DEPTH_METRIC_NAMES, means))
        result["num_images"] = count
        result["skipped"] = int(self.num_skipped)
        return result


def _as_batch(depth: Tensor) -> Tensor:
    """``[H, W]`` -> ``[1, H, W]``; ``[B, 1, H, W]`` -> ``[B, H, W]``; ``[B, H, W]`` unchanged."""
    if depth.ndim == 2:
        return depth.unsqueeze(0)
    if depth.ndim == 4 and depth.shape[1] == 1:
        return depth.squeeze(1)
    if depth.ndim == 3:
        return depth
    raise DataError(f"expected a depth map [H, W], [B, H, W] or [B, 1, H, W], got shape {tuple(depth.shape)}")
