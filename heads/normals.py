"""Surface-normal heads: a linear probe and a DPT decoder with 3 outputs, L2-normalised per cell.

The probing lineage (Probe3D, github.com/mbanani/probe3d ``evals/models/probes.py::SurfaceNormalHead``;
TIPS and the SigLIP2 paper follow it) reads normals from a linear layer or a DPT decoder on the frozen
features, with an optional fourth channel for the uncertainty-aware loss (Bae et al. 2021). Here:

- :class:`LinearNormalsHead`: :class:`~.linear.LinearHead` (BatchNorm + 1x1 conv, optional MAP-embedding
  concatenation) with 3 (+1) outputs;
- :class:`DPTNormalsHead`: a :class:`~.dpt.DPTHead` decoder with 3 (+1) outputs, composed (the DPT module
  itself is unchanged; whatever resolution it predicts at, this head normalises it).

Outputs ``[B, 3, H, W]`` unit normals in the camera frame of the data (x right, y down, z forward, as
the data sets here), or ``[B, 4, H, W]`` with ``uncertainty=True``: channel 3 is the raw concentration
logit (``kappa = elu(logit) + 1.01``, :func:`siglip2_dense.losses.normals.concentration_from_logit`),
left raw so a resize before the loss commutes with it, as in Probe3D. Padded cells are 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from siglip2_dense.backbone.features import DenseFeatures

from .dpt import DPTHead
from .linear import LinearHead
from .padded_grid import zero_padding


def unit_normals(outputs: torch.Tensor) -> torch.Tensor:
    """``[B, 3 (+1), H, W]`` -> the first three channels L2-normalised per cell (zero vectors stay zero);
    a fourth channel passes through unchanged."""
    normals = F.normalize(outputs[:, :3], dim=1, eps=1e-12)
    return torch.cat([normals, outputs[:, 3:]], dim=1)


def normals_channels(uncertainty: bool) -> int:
    """3 normal components, plus a concentration logit with ``uncertainty``."""
    return 4 if uncertainty else 3


class LinearNormalsHead(LinearHead):
    """Per-patch surface normals from BatchNorm + 1x1 convolution (Probe3D's ``linear`` normal probe).

    Args:
        in_channels: the backbone's ``out_channels``, one width per tapped layer.
        layers: ``"all"`` concatenates every map; ``"last"`` uses only the last one.
        use_pooled: concatenate the pooled MAP-head embedding to every patch feature (SigLIP2 paper).
        pooled_channels: width of the pooled embedding (default: ``in_channels[-1]``).
        dropout: channel dropout before the 1x1 convolution.
        uncertainty: a fourth output channel, the concentration logit of the uncertainty-aware loss.

    ``forward(features) -> [B, 3 or 4, Hmax, Wmax]``: unit normals on the padded patch grid, 0 on padding.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        layers: str = "all",
        use_pooled: bool = False,
        pooled_channels: int | None = None,
        dropout: float = 0.0,
        uncertainty: bool = False,
    ) -> None:
        super().__init__(in_channels, normals_channels(uncertainty), layers, use_pooled, pooled_channels, dropout)
        self.config = dict(in_channels=self.in_channels, layers=layers, use_pooled=bool(use_pooled),
                           pooled_channels=pooled_channels, dropout=float(dropout), uncertainty=bool(uncertainty))
        self.uncertainty = bool(uncertainty)

    def forward(self, features: DenseFeatures) -> torch.Tensor:
        """:class:`DenseFeatures` -> unit normals ``[B, 3 (+1), Hmax, Wmax]``, zero on padded cells."""
        return zero_padding(unit_normals(super().forward(features)), features.mask)


class DPTNormalsHead(nn.Module):
    """Surface normals from a DPT decoder on four layers (Probe3D's ``dpt`` normal probe).

    Args:
        in_channels: the backbone's ``out_channels``: exactly four layers, shallow to deep.
        features, reassemble_channels, readout, pooled_channels, dropout, channels_last: as
            :class:`~.dpt.DPTHead`.
        use_batchnorm: BatchNorm in the residual units and the output block (default False: Probe3D's DPT
            and DPT's depth head have none).
        uncertainty: a fourth output channel, the concentration logit of the uncertainty-aware loss.

    ``forward(features) -> [B, 3 or 4, H', W']``: unit normals where the decoder predicts (the padded patch
    grid, or finer if the DPT module predicts at its decoder's resolution), 0 on padding.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        features: int | None = None,
        reassemble_channels: Sequence[int] | None = None,
        readout: str = "ignore",
        pooled_channels: int | None = None,
        use_batchnorm: bool = False,
        dropout: float = 0.0,
        channels_last: bool = True,
        uncertainty: bool = False,
    ) -> None:
        super().__init__()
        self.decoder = DPTHead(
            in_channels, num_classes=normals_channels(uncertainty), task="segmentation", features=features,
            reassemble_channels=reassemble_channels, readout=readout, pooled_channels=pooled_channels,
            use_batchnorm=bool(use_batchnorm), dropout=dropout, channels_last=channels_last,
        )
        self.config = dict(
            in_channels=self.decoder.in_channels, features=features,
            reassemble_channels=list(reassemble_channels) if reassemble_channels is not None else None,
            readout=readout, pooled_channels=pooled_channels, use_batchnorm=bool(use_batchnorm),
            dropout=float(dropout), channels_last=bool(channels_last), uncertainty=bool(uncertainty),
        )
        self.in_channels = self.decoder.in_channels
        self.uncertainty = bool(uncertainty)

    def forward(self, features: DenseFeatures) -> torch.Tensor:
        """:class:`DenseFeatures` -> unit normals ``[B, 3 (+1), H', W']``, zero on padded cells."""
        return unit_normals(self.decoder(features))
