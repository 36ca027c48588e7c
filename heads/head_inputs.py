"""What every head does first with :class:`DenseFeatures`: check them, and zero the padding.

Heads never trust the padded cells of a feature map to be zero (a backbone or a caller may leave
values there); they zero them on entry, so nothing downstream can see them.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.errors import RequestError

from .padded_grid import zero_padding

LAYER_CHOICES = ("all", "last")  # which maps a linear head reads: every tapped layer, or the last one


def masked_maps(features: DenseFeatures, in_channels: list[int], head: str) -> list[torch.Tensor]:
    """The feature maps ``[B, C_i, H, W]`` after checking them against ``in_channels``, padding zeroed."""
    maps = list(features.maps)
    if len(maps) != len(in_channels):
        raise RequestError(
            f"{head}: got {len(maps)} feature maps, built for {len(in_channels)} (in_channels={in_channels}); "
            "load the backbone with as many layers as the head was built for"
        )
    for index, (feature_map, channels) in enumerate(zip(maps, in_channels)):
        if feature_map.ndim != 4 or feature_map.shape[1] != channels:
            raise RequestError(
                f"{head}: feature map {index} has shape {tuple(feature_map.shape)}; expected [B, {channels}, H, W]"
            )
        if feature_map.shape[-2:] != features.mask.shape[-2:]:
            raise RequestError(
                f"{head}: feature map {index} is {tuple(feature_map.shape[-2:])} cells, the mask "
                f"{tuple(features.mask.shape[-2:])}; expected the same padded grid"
            )
    return [zero_padding(feature_map, features.mask) for feature_map in maps]


def pooled_embedding(features: DenseFeatures, channels: int, head: str) -> torch.Tensor:
    """``features.pooled [B, channels]``, or an error saying why it is missing or of the wrong width."""
    pooled = features.pooled
    if pooled is None:
        raise RequestError(
            f"{head}: built to use the pooled (MAP-head) embedding, but the features have none; load the "
            "backbone with the last block among its layers and a pooling head"
        )
    if pooled.ndim != 2 or pooled.shape[1] != channels:
        raise RequestError(f"{head}: pooled embedding {tuple(pooled.shape)}; expected [B, {channels}]")
    return pooled


def broadcast_to_cells(vector: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``vector [B, C]`` copied to every real cell of ``mask [B, H, W]`` -> ``[B, C, H, W]``, zero elsewhere."""
    grid = vector[:, :, None, None].expand(-1, -1, *mask.shape[-2:])
    return zero_padding(grid, mask)


def checked_channels(in_channels: Sequence[int], head: str) -> list[int]:
    """``in_channels`` as a list of positive ints, or a :class:`RequestError` saying what is wrong."""
    channels = list(in_channels) if isinstance(in_channels, Sequence) and not isinstance(in_channels, str) else []
    valid = all(isinstance(c, Integral) and not isinstance(c, bool) and c >= 1 for c in channels)
    if not channels or not valid:
        raise RequestError(
            f"{head}: in_channels={in_channels!r}; expected a non-empty list of positive ints, one per "
            "backbone layer (backbone.out_channels)"
        )
    return [int(c) for c in channels]


def init_classifier(conv: torch.nn.Conv2d, init_std: float | None, head: str) -> None:
    """``init_std`` None: PyTorch's default Conv2d init (kept); a number: weight ~ Normal(0, init_std), bias 0.

    DINOv2's ``conv_seg`` (mmseg ``BaseDecodeHead.init_weights``: ``normal_init(self.conv_seg, mean=0,
    std=0.01)``), DINOv3's linear heads (dinov3/eval/segmentation/models/heads/linear_head.py:32-33,
    dinov3/eval/depth/models/linear_head.py:38-39: ``nn.init.normal_(conv.weight, mean=0, std=0.01)``,
    ``nn.init.constant_(conv.bias, 0)``).
    """
    if init_std is None:
        return
    if isinstance(init_std, bool) or not isinstance(init_std, (int, float)) or not init_std > 0:
        raise RequestError(f"{head}: init_std={init_std!r}; expected a positive number or None (PyTorch's default)")
    torch.nn.init.normal_(conv.weight, mean=0.0, std=float(init_std))
    torch.nn.init.constant_(conv.bias, 0.0)


def check_probability(value: float, key: str, head: str) -> float:
    """``value`` as a float in [0, 1), or a :class:`RequestError` naming the head and the key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise RequestError(f"{head}: {key}={value!r}; expected a probability in [0, 1)")
    return float(value)
