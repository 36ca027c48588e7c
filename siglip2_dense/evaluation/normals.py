"""Surface-normal metrics, as Probe3D's ``evaluate_surface_norm`` computes them, plus the pixel-pooled ones.

Probe3D (github.com/mbanani/probe3d, ``evals/utils/metrics.py::evaluate_surface_norm``, used by
``train_snorm.py::validate``), per image: the angular error of each pixel is
``acos(clamp(cosine_similarity(pred, gt), -1, 1))`` in degrees (``torch.cosine_similarity`` normalises
both vectors, so the prediction need not be unit length); over the image's valid pixels it takes
``rmse = sqrt(mean(err**2))`` and the fractions with ``err < 11.25``, ``< 22.5``, ``< 30`` (strict);
``validate`` concatenates the per-image values over the data set and takes their mean. So Probe3D's
numbers are **per image, then averaged over images**. Probe3D computes no mean or median; the same
per-image rule gives them here (``mean``, ``median``: each image's mean / median error, averaged).

The older normal-estimation lineage Probe3D cites (Fouhey et al. 2013, GeoNet, Bae et al. 2021:
``compute_normal_errors`` pools ``total_normal_errors`` over the data set) treats **every valid pixel of the
data set as one sample**: those numbers are the ``pixel_*`` keys. The pixel-pooled median is read from a
histogram of the errors with :data:`MEDIAN_BIN_DEGREES` bins (a sum state, so it syncs across processes):
it is exact to within half a bin, 0.0005 degrees.

Valid pixels: the ground-truth vector has length above :data:`VALID_NORM` (unit normals are valid, the
zero vectors that mark missing normals are not). Probe3D takes its mask from the depth (``depth > 0``);
the NYUv2 loaders here zero the normals where that mask is false, so the two agree.

Deliberate differences from Probe3D, none of which changes a number on images with a valid pixel: the
arithmetic is float64, and an image with no valid pixel is skipped and counted in ``skipped`` (Probe3D
clamps its pixel count to 1 and averages a 0 error into the data set's numbers).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from siglip2_dense.errors import DataError

ANGLE_THRESHOLDS_DEGREES = (11.25, 22.5, 30.0)
THRESHOLD_KEYS = tuple(f"within_{t:g}" for t in ANGLE_THRESHOLDS_DEGREES)  # within_11.25, within_22.5, within_30
IMAGE_METRIC_NAMES = ("mean", "median", "rmse", *THRESHOLD_KEYS)
NORMALS_METRIC_NAMES = (*IMAGE_METRIC_NAMES, *(f"pixel_{name}" for name in IMAGE_METRIC_NAMES))
VALID_NORM = 0.5  # a ground-truth normal counts when its length exceeds this (unit: valid; zero: missing)
MEDIAN_BIN_DEGREES = 1e-3
NUM_MEDIAN_BINS = int(round(180.0 / MEDIAN_BIN_DEGREES))


def angular_errors_degrees(pred: Tensor, gt: Tensor) -> Tensor:
    """Probe3D's per-pixel angular error: ``[N, 3]`` predictions and ground truth -> ``[N]`` float64 degrees.

    ``acos(clamp(cosine_similarity(pred, gt), -1, 1)) * 180 / pi``; neither input need be unit length.
    """
    if pred.ndim != 2 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise DataError(f"need two [N, 3] normal lists, got pred {tuple(pred.shape)} and gt {tuple(gt.shape)}")
    cosine = torch.cosine_similarity(pred.double(), gt.double(), dim=-1).clamp(-1.0, 1.0)
    return torch.acos(cosine) * (180.0 / math.pi)


def normal_error_metrics(errors: Tensor) -> dict[str, Tensor]:
    """The metrics of one set of angular errors ``[N]`` (degrees, N > 0): 0-dim float64 tensors.

    ``mean``, ``median`` (numpy's: the mean of the two middle values when N is even), ``rmse =
    sqrt(mean(err**2))``, and ``within_11.25``, ``within_22.5``, ``within_30``: the percentage with
    ``err < threshold`` (Probe3D's strict comparison, times 100).
    """
    errors = errors.double().flatten()
    if errors.numel() == 0:
        raise DataError("need at least one angular error")
    metrics = {
        "mean": errors.mean(),
        "median": torch.quantile(errors, 0.5),
        "rmse": errors.square().mean().sqrt(),
    }
    for key, threshold in zip(THRESHOLD_KEYS, ANGLE_THRESHOLDS_DEGREES):
        metrics[key] = (errors < threshold).double().mean() * 100.0
    return metrics


def valid_normal_mask(gt: Tensor) -> Tensor:
    """``[..., 3]`` ground-truth normals -> ``[...]`` bool: the vector's length exceeds :data:`VALID_NORM`."""
    return torch.linalg.vector_norm(gt.double(), dim=-1) > VALID_NORM


def median_from_histogram(counts: Tensor, bin_width: float = MEDIAN_BIN_DEGREES) -> float:
    """The median of the values binned in ``counts [num_bins]`` (bin ``i`` = ``[i * w, (i + 1) * w)``).

    Linear interpolation inside the bin where the cumulative count reaches half the total; NaN if empty.
    """
    total = float(counts.sum())
    if total <= 0:
        return math.nan
    cumulative = torch.cumsum(counts.double(), dim=0)
    half = total / 2.0
    index = int(torch.searchsorted(cumulative, torch.tensor([half], dtype=torch.float64, device=counts.device)))
    index = min(index, counts.numel() - 1)
    before = float(cumulative[index - 1]) if index > 0 else 0.0
    inside = float(counts[index])
    fraction = (half - before) / inside if inside > 0 else 0.5
    return (index + fraction) * bin_width


class NormalsEvaluator(Metric):
    """Surface-normal evaluation as a torchmetrics ``Metric`` (distributed sync for free).

    States (all ``sum``-reduced): float64 sums of the six per-image metrics and the image counts
    (Probe3D's per-image numbers), and for the pixel-pooled numbers the valid-pixel count, the sums of
    the errors and of their squares, the counts under each threshold, and the error histogram.

    Example:
        >>> ev = NormalsEvaluator()
        >>> ev.update(pred, gt)     # [B, H, W, 3] or [H, W, 3]; gt zero where missing
        >>> ev.compute()["rmse"]    # degrees, Probe3D's number (per image, averaged)
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("image_sums", default=torch.zeros(len(IMAGE_METRIC_NAMES), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("num_images", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_skipped", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        # pixel-pooled: [valid pixels, sum err, sum err^2, count < 11.25, < 22.5, < 30]
        self.add_state("pixel_sums", default=torch.zeros(3 + len(ANGLE_THRESHOLDS_DEGREES), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("histogram", default=torch.zeros(NUM_MEDIAN_BINS, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one normal map ``[H, W, 3]`` or a batch ``[B, H, W, 3]`` (predictions need not be unit length)."""
        pred, target = _as_batch(pred, "prediction"), _as_batch(target, "target")
        if pred.shape != target.shape:
            raise DataError(
                f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}; "
                "resize the prediction to the normal map ([B, H, W, 3], channels last) before evaluating"
            )
        target = target.to(pred.device)
        image_sums = torch.zeros(len(IMAGE_METRIC_NAMES), dtype=torch.float64, device=pred.device)
        pixel_sums = torch.zeros(3 + len(ANGLE_THRESHOLDS_DEGREES), dtype=torch.float64, device=pred.device)
        histogram = torch.zeros(NUM_MEDIAN_BINS, dtype=torch.float64, device=pred.device)
        evaluated = skipped = 0
        for image_pred, image_gt in zip(pred, target):
            valid = valid_normal_mask(image_gt)
            if not bool(valid.any()):
                skipped += 1
                continue
            errors = angular_errors_degrees(image_pred[valid], image_gt[valid])
            metrics = normal_error_metrics(errors)
            image_sums = image_sums + torch.stack([metrics[name] for name in IMAGE_METRIC_NAMES])
            pixel_sums = pixel_sums + torch.stack([
                torch.tensor(float(errors.numel()), dtype=torch.float64, device=pred.device),
                errors.sum(), errors.square().sum(),
                *((errors < t).double().sum() for t in ANGLE_THRESHOLDS_DEGREES),
            ])
            bins = (errors / MEDIAN_BIN_DEGREES).long().clamp_(0, NUM_MEDIAN_BINS - 1)
            histogram = histogram + torch.bincount(bins, minlength=NUM_MEDIAN_BINS).double()
            evaluated += 1
        # out-of-place, so states created under torch.inference_mode() (by reset()) stay usable outside it
        self.image_sums = self.image_sums + image_sums.to(self.image_sums.device)
        self.pixel_sums = self.pixel_sums + pixel_sums.to(self.pixel_sums.device)
        self.histogram = self.histogram + histogram.to(self.histogram.device)
        self.num_images = self.num_images + evaluated
        self.num_skipped = self.num_skipped + skipped

    def compute(self) -> dict[str, float]:
        """Per-image metrics averaged over images, the ``pixel_*`` metrics, ``num_images`` and ``skipped``.

        Degrees for the errors, percent for ``within_*``; NaN when no image was evaluated.
        """
        count = int(self.num_images)
        means = (self.image_sums / count).tolist() if count else [math.nan] * len(IMAGE_METRIC_NAMES)
        result: dict[str, float] = dict(zip(IMAGE_METRIC_NAMES, means))
        pixels = float(self.pixel_sums[0])
        if pixels > 0:
            sums = self.pixel_sums.tolist()
            result["pixel_mean"] = sums[1] / pixels
            result["pixel_median"] = median_from_histogram(self.histogram)
            result["pixel_rmse"] = math.sqrt(sums[2] / pixels)
            for offset, key in enumerate(THRESHOLD_KEYS):
                result[f"pixel_{key}"] = sums[3 + offset] / pixels * 100.0
        else:
            result.update({f"pixel_{name}": math.nan for name in IMAGE_METRIC_NAMES})
        result["num_images"] = count
        result["skipped"] = int(self.num_skipped)
        return result


def _as_batch(normals: Tensor, what: str) -> Tensor:
    """``[H, W, 3]`` -> ``[1, H, W, 3]``; ``[B, H, W, 3]`` unchanged; anything else: :class:`DataError`."""
    if normals.ndim == 3 and normals.shape[-1] == 3:
        return normals.unsqueeze(0)
    if normals.ndim == 4 and normals.shape[-1] == 3:
        return normals
    raise DataError(f"expected a {what} normal map [H, W, 3] or [B, H, W, 3] (channels last), "
                    f"got shape {tuple(normals.shape)}")
