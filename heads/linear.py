"""The linear probe: BatchNorm + 1x1 convolution on the patch features (DINOv2 / DINOv3 protocol).

One tapped layer gives DINOv2's ``linear`` probe; several concatenated give ``linear4`` (the
last four blocks). With ``use_pooled=True`` the pooled MAP-head embedding is concatenated to every
patch feature, as in the SigLIP2 paper's dense probes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.errors import RequestError

from .head_inputs import (
    LAYER_CHOICES,
    broadcast_to_cells,
    check_probability,
    checked_channels,
    init_classifier,
    masked_maps,
    pooled_embedding,
)
from .masked_batch_norm import MaskedBatchNorm2d
from .padded_grid import zero_padding


class LinearHead(nn.Module):
    """Per-patch linear classifier on one layer or several concatenated.

    Args:
        in_channels: the backbone's ``out_channels``, one width per tapped layer.
        num_classes: K, the number of output logits per patch.
        layers: ``"all"`` concatenates every map (DINOv2 ``linear4`` when the backbone taps the last
            four blocks); ``"last"`` uses only the last map (DINOv2 ``linear``).
        use_pooled: concatenate the pooled MAP-head embedding ``[B, P]`` to every patch feature.
        pooled_channels: P, the width of the pooled embedding (default: ``in_channels[-1]``).
        dropout: channel dropout (``nn.Dropout2d``) before the classifier, as mmsegmentation.
        dropout_before_norm: channel dropout before the BatchNorm, in training only (DINOv3's linear head:
            ``Dropout2d(0.1)`` then ``SyncBatchNorm`` then the conv, dinov3/eval/segmentation/models/heads/
            linear_head.py:83-85; its ``predict`` skips the dropout). 0: none.
        init_std: the classifier's init: None keeps PyTorch's default; a number draws the weight from
            Normal(0, init_std) with zero bias (DINOv2 / DINOv3: 0.01).

    ``forward(features) -> logits [B, K, Hmax, Wmax]`` on the padded patch grid; padded cells are 0.
    BatchNorm statistics come from the real patches only (:class:`MaskedBatchNorm2d`).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        layers: str = "all",
        use_pooled: bool = False,
        pooled_channels: int | None = None,
        dropout: float = 0.0,
        dropout_before_norm: float = 0.0,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        channels = checked_channels(in_channels, "LinearHead")
        dropout_before_norm = check_probability(dropout_before_norm, "dropout_before_norm", "LinearHead")
        if layers not in LAYER_CHOICES:
            raise RequestError(f"LinearHead: layers={layers!r}; expected one of {', '.join(LAYER_CHOICES)}")
        if int(num_classes) < 1:
            raise RequestError(f"LinearHead: num_classes={num_classes}; expected a positive int")
        if not 0.0 <= dropout < 1.0:
            raise RequestError(f"LinearHead: dropout={dropout}; expected a probability in [0, 1)")
        self.config = dict(in_channels=channels, num_classes=int(num_classes), layers=layers,
                           use_pooled=bool(use_pooled), pooled_channels=pooled_channels, dropout=float(dropout),
                           dropout_before_norm=dropout_before_norm, init_std=init_std)
        self.in_channels = channels
        self.layers = layers
        self.use_pooled = bool(use_pooled)
        self.pooled_channels = int(pooled_channels) if pooled_channels is not None else channels[-1]
        width = sum(channels) if layers == "all" else channels[-1]
        width += self.pooled_channels if self.use_pooled else 0
        self.norm = MaskedBatchNorm2d(width)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.dropout_before_norm = nn.Dropout2d(dropout_before_norm) if dropout_before_norm > 0 else nn.Identity()
        self.classifier = nn.Conv2d(width, int(num_classes), kernel_size=1)
        init_classifier(self.classifier, init_std, "LinearHead")
        self.output_scale = 1  # logits on the patch grid

    def batch_norm_input(self, features: DenseFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``self.norm`` normalises: ``([B, C, Hmax, Wmax], mask [B, Hmax, Wmax])``, a function of the
        features alone (no trained layer before it), so a training loop can pool its batch statistics
        over every micro-batch of an accumulated step before the forward."""
        maps = masked_maps(features, self.in_channels, "LinearHead")
        chosen = maps if self.layers == "all" else maps[-1:]
        if self.use_pooled:
            pooled = pooled_embedding(features, self.pooled_channels, "LinearHead")
            chosen = [*chosen, broadcast_to_cells(pooled.to(maps[0].dtype), features.mask)]
        return torch.cat(chosen, dim=1), features.mask

    def forward(self, features: DenseFeatures) -> torch.Tensor:
        """:class:`DenseFeatures` -> logits ``[B, K, Hmax, Wmax]``, zero on padded cells."""
        x, mask = self.batch_norm_input(features)
        x = self.norm(self.dropout_before_norm(x), mask)
        return zero_padding(self.classifier(self.dropout(x)), features.mask)
