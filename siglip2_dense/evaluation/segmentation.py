"""Semantic-segmentation metrics, exactly as mmsegmentation's ``IoUMetric``.

mmsegmentation sums, over the whole data set, four per-class pixel counts (intersection, union,
predicted area, labelled area) and only then divides: ``aAcc = sum(intersection) / sum(label)``,
``IoU[k] = intersection[k] / union[k]``, ``Acc[k] = intersection[k] / label[k]``, and ``mIoU`` /
``mAcc`` are the NaN-skipping means of those lists, in percent. A class absent from both the
prediction and the ground truth has no union: its IoU is NaN and it is left out of ``mIoU``. A class
that is predicted but absent from the ground truth has IoU 0 (it counts against ``mIoU``) and Acc NaN
(it is left out of ``mAcc``). Pixels whose label is ``ignore_index`` are left out of everything.

Two deliberate differences from mmsegmentation, neither of which changes a number on valid data:
the counts are accumulated in float64 rather than float32 (mmseg's float32 running sums over a data
set of hundreds of millions of pixels are exact only up to 2**24 per class), and the results are not
rounded to two decimals. Labels outside ``[0, num_classes)`` that are not ``ignore_index`` raise
:class:`~siglip2_dense.errors.DataError` instead of being silently dropped by ``torch.histc``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

from siglip2_dense.errors import DataError, RequestError

AREA_NAMES = ("area_intersect", "area_union", "area_pred", "area_label")


def intersect_and_union(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-class pixel counts of one prediction against its ground truth (mmseg ``intersect_and_union``).

    Args:
        pred: integer label map, any shape (typically ``[H, W]`` or ``[B, H, W]``).
        target: integer label map of the same shape; pixels equal to ``ignore_index`` are left out.
        num_classes: K, the number of classes.
        ignore_index: the label that marks pixels to leave out.

    Returns:
        ``(area_intersect, area_union, area_pred, area_label)``, each a float64 tensor ``[K]`` on the
        device of ``pred``: pixels where prediction and label are both k; pixels where either is k;
        pixels predicted k; pixels labelled k (all counted over non-ignored pixels only).

    Raises:
        DataError: the shapes differ, or a label / prediction is outside ``[0, K)`` on a counted pixel.
    """
    if pred.shape != target.shape:
        raise DataError(
            f"prediction shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}; "
            "resize the prediction to the label map before evaluating"
        )
    if pred.is_floating_point() or target.is_floating_point():
        raise DataError(
            f"expected integer label maps, got prediction dtype {pred.dtype} and target dtype {target.dtype}; "
            "pass logits.argmax(dim=1)"
        )
    target = target.to(pred.device)
    keep = target != ignore_index
    pred = pred[keep].long()
    target = target[keep].long()
    _check_label_range(pred, num_classes, "prediction")
    _check_label_range(target, num_classes, f"target (ignore_index={ignore_index})")

    area_intersect = torch.bincount(target[pred == target], minlength=num_classes).double()
    area_pred = torch.bincount(pred, minlength=num_classes).double()
    area_label = torch.bincount(target, minlength=num_classes).double()
    area_union = area_pred + area_label - area_intersect
    return area_intersect, area_union, area_pred, area_label


def _check_label_range(labels: Tensor, num_classes: int, what: str) -> None:
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
        raise DataError(
            f"{what} holds labels in [{low}, {high}], outside [0, {num_classes}); "
            "check num_classes, ignore_index and reduce_zero_label"
        )


def areas_to_metrics(
    area_intersect: Tensor, area_union: Tensor, area_pred: Tensor, area_label: Tensor
) -> dict[str, float | list[float]]:
    """Data-set metrics from summed per-class counts (mmseg ``total_area_to_metrics`` + summary).

    Args:
        area_intersect, area_union, area_pred, area_label: float tensors ``[K]``, summed over the
            data set (``area_pred`` is accepted for symmetry with mmseg; mIoU / mAcc do not use it).

    Returns:
        ``{"mIoU", "mAcc", "aAcc"}``: floats in percent (NaN when nothing was counted), and
        ``{"IoU", "Acc"}``: lists of K per-class floats in percent, NaN where the class has no union
        (IoU) or no labelled pixel (Acc).
    """
    del area_pred  # part of mmseg's tuple; only mDice / mFscore (not reported here) use it
    area_intersect, area_union, area_label = (
        t.detach().double().cpu() for t in (area_intersect, area_union, area_label)
    )
    iou = _divide_or_nan(area_intersect, area_union) * 100.0
    acc = _divide_or_nan(area_intersect, area_label) * 100.0
    total_label = float(area_label.sum())
    a_acc = float(area_intersect.sum()) / total_label * 100.0 if total_label > 0 else math.nan
    return {
        "mIoU": _nanmean(iou),
        "mAcc": _nanmean(acc),
        "aAcc": a_acc,
        "IoU": iou.tolist(),
        "Acc": acc.tolist(),
    }


def _divide_or_nan(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` with NaN (not inf, not a warning) where the denominator is 0."""
    out = torch.full_like(numerator, math.nan)
    nonzero = denominator > 0
    out[nonzero] = numerator[nonzero] / denominator[nonzero]
    return out


def _nanmean(values: Tensor) -> float:
    finite = values[~values.isnan()]
    return float(finite.mean()) if finite.numel() else math.nan


class SegmentationEvaluator(Metric):
    """mmsegmentation's ``IoUMetric`` as a torchmetrics ``Metric`` (distributed sync for free).

    The states are the four data-set sums of per-class counts (float64 ``[K]``), reduced with
    ``sum`` across processes, so ``compute()`` on every rank sees the whole data set.

    Example:
        >>> ev = SegmentationEvaluator(num_classes=150, ignore_index=255)
        >>> ev.update(logits.argmax(1), masks)          # [B, H, W] int tensors
        >>> ev.compute()["mIoU"]                          # percent
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise RequestError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        for name in AREA_NAMES:
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        """Add one image ``[H, W]`` or a batch ``[B, H, W]`` of integer label maps."""
        if pred.ndim not in (2, 3):
            raise DataError(
                f"expected label maps [H, W] or [B, H, W], got prediction shape {tuple(pred.shape)} "
                f"and target shape {tuple(target.shape)}"
            )
        areas = intersect_and_union(pred, target, self.num_classes, self.ignore_index)
        for name, area in zip(AREA_NAMES, areas):
            state = getattr(self, name)
            setattr(self, name, state + area.to(state.device))

    def compute(self) -> dict[str, float | list[float]]:
        """``{"mIoU", "mAcc", "aAcc"}`` (floats, percent) and ``{"IoU", "Acc"}`` (K floats, NaN allowed)."""
        return areas_to_metrics(*(getattr(self, name) for name in AREA_NAMES))
