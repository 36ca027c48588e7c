"""Training losses of the dense heads, one module per family; every name is importable from here.

- :mod:`.dense`: segmentation cross-entropy and BTS-style depth losses (SiLog, gradient matching),
  and :func:`depth_loss`, which dispatches on the protocol's form;
- :mod:`.dinov2_depth`: DINOv2's NYU depth loss as its code computes it (SigLoss with warm-up, its
  GradientLoss);
- :mod:`.normals`: surface-normal losses (angular, cosine, Probe3D's uncertainty-aware angular loss).
"""

from siglip2_dense.losses.dense import (
    DEPTH_LOSS_FORMS,
    cross_entropy_denominator,
    depth_loss,
    gradient_matching_loss,
    one_hot_binary_cross_entropy_sum,
    resize_to,
    segmentation_cross_entropy,
    silog_loss,
)
from siglip2_dense.losses.dinov2_depth import dinov2_depth_loss, dinov2_sigloss, reference_gradient_loss
from siglip2_dense.losses.normals import (
    NORMALS_LOSSES,
    angular_loss,
    concentration_from_logit,
    cosine_loss,
    normals_loss,
    uncertainty_angular_loss,
)

__all__ = [
    "DEPTH_LOSS_FORMS",
    "NORMALS_LOSSES",
    "angular_loss",
    "concentration_from_logit",
    "cosine_loss",
    "cross_entropy_denominator",
    "depth_loss",
    "dinov2_depth_loss",
    "one_hot_binary_cross_entropy_sum",
    "dinov2_sigloss",
    "gradient_matching_loss",
    "normals_loss",
    "reference_gradient_loss",
    "resize_to",
    "segmentation_cross_entropy",
    "silog_loss",
    "uncertainty_angular_loss",
]
