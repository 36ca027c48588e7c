"""The linear depth probe: [BatchNorm +] 1x1 convolution to depth-bin logits (DINOv2's / DINOv3's ``linear`` depth).

256 bins between ``min_depth`` and ``max_depth``, weights ``relu(logit) + 0.1`` normalised over bins,
depth = expectation over the bin centres (:class:`DepthFromBins`). The two references differ in the
head (facebookresearch/dinov2 ``dinov2/eval/depth/models/decode_heads/linear_head.py``; dinov3
``dinov3/eval/depth/configs/config-nyu.yaml:26-29``):

- DINOv2 lin.1: no BatchNorm (``# self.bn = nn.SyncBatchNorm(...)`` commented out, line 23), the CLS
  token concatenated to every patch (``output_cls_token=True``, ``channels=1536``), the features
  upsampled bilinearly 4x before the 1x1 conv (``upsample=4``, line 43): ``use_batchnorm=False,
  use_pooled=True, feature_upsample=4``.
- DINOv3: BatchNorm, no CLS, no upsampling: the defaults.

The 4x upsampling runs on the logits rather than the features: a 1x1 convolution commutes with
bilinear interpolation (each output is a convex combination, weights summing to one), so the
logits are the same and the upsampled tensor has ``num_bins`` channels instead of ``C``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.errors import RequestError

from .depth_bins import DepthFromBins, check_depth_range
from .head_inputs import (
    LAYER_CHOICES,
    broadcast_to_cells,
    checked_channels,
    init_classifier,
    masked_maps,
    pooled_embedding,
)
from .masked_batch_norm import MaskedBatchNorm2d
from .padded_grid import grid_sizes_at, mask_like, upsample_by, zero_padding


class BinsDepthHead(nn.Module):
    """Per-patch depth from a linear classifier over depth bins.

    Args:
        in_channels: the backbone's ``out_channels``, one width per tapped layer.
        layers: ``"all"`` concatenates every map (DINOv2 ``linear4`` when the backbone taps the last
            four blocks); ``"last"`` uses only the last map (DINOv2 ``linear``).
        min_depth, max_depth: the depth range in metres; every real output lies inside it.
        num_bins: N, the number of depth bins.
        bin_spacing: ``"uniform"`` (DINOv2) or ``"log"``.
        use_pooled: concatenate the pooled MAP-head embedding to every patch feature.
        pooled_channels: width of the pooled embedding (default: ``in_channels[-1]``).
        dropout: channel dropout before the classifier.
        use_batchnorm: BatchNorm before the classifier (DINOv3: yes; DINOv2: no).
        feature_upsample: f, bilinear upsampling of the features before the bins (DINOv2: 4).
        init_std: the classifier's init: None keeps PyTorch's default; a number draws the weight from
            Normal(0, init_std) with zero bias (DINOv3: 0.01, dinov3/eval/depth/models/linear_head.py:38-39).

    ``forward(features) -> depth [B, 1, f*Hmax, f*Wmax]`` in metres, ``f`` cells per patch side
    (``output_scale``); real cells lie in ``[min_depth, max_depth]``, padded cells are 0.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        layers: str = "all",
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        num_bins: int = 256,
        bin_spacing: str = "uniform",
        use_pooled: bool = False,
        pooled_channels: int | None = None,
        dropout: float = 0.0,
        use_batchnorm: bool = True,
        feature_upsample: int = 1,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        channels = checked_channels(in_channels, "BinsDepthHead")
        if isinstance(feature_upsample, bool) or int(feature_upsample) != feature_upsample or feature_upsample < 1:
            raise RequestError(f"BinsDepthHead: feature_upsample={feature_upsample!r}; expected an integer >= 1")
        check_depth_range(min_depth, max_depth, num_bins, bin_spacing, "BinsDepthHead")
        if layers not in LAYER_CHOICES:
            raise RequestError(f"BinsDepthHead: layers={layers!r}; expected one of {', '.join(LAYER_CHOICES)}")
        if not 0.0 <= dropout < 1.0:
            raise RequestError(f"BinsDepthHead: dropout={dropout}; expected a probability in [0, 1)")
        self.config = dict(in_channels=channels, layers=layers, min_depth=float(min_depth), max_depth=float(max_depth),
                           num_bins=int(num_bins), bin_spacing=bin_spacing, use_pooled=bool(use_pooled),
                           pooled_channels=pooled_channels, dropout=float(dropout),
                           use_batchnorm=bool(use_batchnorm), feature_upsample=int(feature_upsample),
                           init_std=init_std)
        self.in_channels = channels
        self.layers = layers
        self.use_pooled = bool(use_pooled)
        self.pooled_channels = int(pooled_channels) if pooled_channels is not None else channels[-1]
        width = (sum(channels) if layers == "all" else channels[-1]) + (self.pooled_channels if self.use_pooled else 0)
        self.norm = MaskedBatchNorm2d(width) if use_batchnorm else None
        self.output_scale = int(feature_upsample)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(width, int(num_bins), kernel_size=1)
        init_classifier(self.classifier, init_std, "BinsDepthHead")
        self.to_depth = DepthFromBins(min_depth, max_depth, int(num_bins), bin_spacing)

    def batch_norm_input(self, features: DenseFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """What ``self.norm`` normalises: ``([B, C, Hmax, Wmax], mask [B, Hmax, Wmax])``, a function of the
        features alone (see :meth:`LinearHead.batch_norm_input`)."""
        maps = masked_maps(features, self.in_channels, "BinsDepthHead")
        maps = maps if self.layers == "all" else maps[-1:]
        if self.use_pooled:
            pooled = pooled_embedding(features, self.pooled_channels, "BinsDepthHead")
            maps = [*maps, broadcast_to_cells(pooled.to(maps[0].dtype), features.mask)]
        return torch.cat(maps, dim=1), features.mask

    def forward(self, features: DenseFeatures) -> torch.Tensor:
        """:class:`DenseFeatures` -> depth ``[B, 1, f*Hmax, f*Wmax]`` (metres), zero on padded cells."""
        x, mask = self.batch_norm_input(features)
        x = self.norm(x, mask) if self.norm is not None else x
        logits = zero_padding(self.classifier(self.dropout(x)), mask)
        logits = upsample_by(logits, features.grid_sizes.to(logits.device), self.output_scale)
        depth = self.to_depth(logits)
        return zero_padding(depth, mask_like(depth, grid_sizes_at(features.grid_sizes, self.output_scale)))
