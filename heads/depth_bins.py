"""Depth as the expectation over fixed depth bins (AdaBins' "linear" normalisation, DINOv2's probe).

Bin logits ``l_k`` become weights ``(relu(l_k) + 0.1) / sum_j (relu(l_j) + 0.1)`` and the depth is
``sum_k weight_k * centre_k``. The weights are positive and sum to one, so the depth is a convex
combination of bin centres and lies in ``[min_depth, max_depth]``; a final clamp removes the
last float rounding. The weights are computed after dividing by the largest ``relu(l)`` (an
exact identity), so logits up to the float limit neither overflow nor give NaN.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from siglip2_dense.errors import RequestError

BIN_SPACINGS = ("uniform", "log")
BIN_WEIGHT_FLOOR = 0.1


def bin_centres(min_depth: float, max_depth: float, num_bins: int, spacing: str) -> torch.Tensor:
    """``[num_bins]`` float32 depths from ``min_depth`` to ``max_depth`` (both included).

    ``"uniform"``: evenly spaced (DINOv2's ``UD``); ``"log"``: evenly spaced in log depth
    (spacing-increasing discretisation).
    """
    if spacing == "uniform":
        return torch.linspace(min_depth, max_depth, num_bins, dtype=torch.float64).float()
    return torch.exp(torch.linspace(math.log(min_depth), math.log(max_depth), num_bins, dtype=torch.float64)).float()


def check_depth_range(min_depth: float, max_depth: float, num_bins: int, spacing: str, head: str) -> None:
    """Raise :class:`RequestError` unless ``0 < min_depth < max_depth``, ``num_bins >= 2`` and a known spacing."""
    if not 0 < min_depth < max_depth or not math.isfinite(max_depth):
        raise RequestError(f"{head}: min_depth={min_depth}, max_depth={max_depth}; expected 0 < min_depth < max_depth")
    if num_bins < 2:
        raise RequestError(f"{head}: num_bins={num_bins}; expected at least 2")
    if spacing not in BIN_SPACINGS:
        raise RequestError(f"{head}: bin_spacing={spacing!r}; expected one of {', '.join(BIN_SPACINGS)}")


class DepthFromBins(nn.Module):
    """``logits [B, N, H, W]`` over ``N`` depth bins -> depth ``[B, 1, H, W]`` in ``[min_depth, max_depth]``.

    Computed in float32; the bin centres are a non-persistent buffer (rebuilt from the arguments,
    never saved).
    """

    def __init__(self, min_depth: float, max_depth: float, num_bins: int, bin_spacing: str = "uniform") -> None:
        super().__init__()
        check_depth_range(min_depth, max_depth, num_bins, bin_spacing, "DepthFromBins")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.register_buffer("centres", bin_centres(min_depth, max_depth, num_bins, bin_spacing), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        evidence = torch.relu(logits.float())
        scale = evidence.amax(dim=1, keepdim=True).clamp_min(1.0).detach()
        weights = evidence / scale + BIN_WEIGHT_FLOOR / scale
        weights = weights / weights.sum(dim=1, keepdim=True)
        depth = torch.einsum("bkhw,k->bhw", weights, self.centres.float())[:, None]
        return depth.clamp(self.min_depth, self.max_depth)
