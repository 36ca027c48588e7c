"""Evaluators whose numbers mean what they mean in the papers' tables.

``SegmentationEvaluator`` reproduces mmsegmentation's ``IoUMetric`` (ADE20K mIoU / mAcc / aAcc);
``DepthEvaluator`` reproduces BTS's NYUv2 protocol (Eigen crop, per-image errors averaged);
``NormalsEvaluator`` reproduces Probe3D's surface-normal numbers (per-image angular errors averaged). All are
torchmetrics ``Metric`` subclasses whose states are sums, so distributed evaluation syncs for free.
The metric arithmetic lives in pure functions, usable without the ``Metric`` wrappers.
"""

from siglip2_dense.evaluation.depth import (
    DEPTH_METRIC_NAMES,
    DepthEvaluator,
    clamp_prediction,
    compute_depth_errors,
    evaluation_crop_mask,
)
from siglip2_dense.evaluation.normals import (
    NORMALS_METRIC_NAMES,
    NormalsEvaluator,
    angular_errors_degrees,
    normal_error_metrics,
    valid_normal_mask,
)
from siglip2_dense.evaluation.segmentation import SegmentationEvaluator, areas_to_metrics, intersect_and_union

__all__ = [
    "DEPTH_METRIC_NAMES",
    "DepthEvaluator",
    "NORMALS_METRIC_NAMES",
    "NormalsEvaluator",
    "SegmentationEvaluator",
    "areas_to_metrics",
    "clamp_prediction",
    "compute_depth_errors",
    "evaluation_crop_mask",
    "intersect_and_union",
    "angular_errors_degrees",
    "normal_error_metrics",
    "valid_normal_mask",
]
