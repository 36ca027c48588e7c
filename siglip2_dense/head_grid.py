"""One backbone, several heads on its features: DINOv2's "many linear classifiers in one pass".

A :class:`HeadGrid` holds a backbone and ``G`` heads, each reading a subset of the backbone's
tapped layers. The backbone runs once per batch (or not at all when the features come from a
cache); every head sees the same features. With ``G == 1`` and all layers it is exactly
``DenseModel(backbone, head)``. Outputs of all heads are concatenated along channels, so the
inference helpers (whole / slide / TTA / native) run all heads in one pass.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.backbone.layer_indices import resolve_layer_indices
from siglip2_dense.errors import ConfigError
from siglip2_dense.model import cast_features, check_keys_and_shapes, head_dtype, tuned_parameters


def layer_positions(backbone: nn.Module, blocks: Sequence[int] | None) -> list[int]:
    """Positions in ``backbone.layers`` of the requested blocks (negative allowed); None = all."""
    if blocks is None:
        return list(range(len(backbone.layers)))
    resolved = resolve_layer_indices(list(blocks), backbone.num_blocks)
    missing = [b for b in resolved if b not in backbone.layers]
    if missing:
        raise ConfigError(
            f"train.layer_grid entry {list(blocks)} asks for blocks {missing} the backbone does not tap; "
            f"model.layers gives blocks {backbone.layers}"
        )
    return [backbone.layers.index(b) for b in resolved]


def select_layers(features: DenseFeatures, positions: Sequence[int]) -> DenseFeatures:
    """``features`` restricted to the maps at ``positions`` (mask, grid sizes and pooled shared)."""
    if list(positions) == list(range(len(features.maps))):
        return features
    return DenseFeatures(
        maps=[features.maps[p] for p in positions], mask=features.mask,
        grid_sizes=features.grid_sizes, pooled=features.pooled,
    )


def backbone_with_layers(backbone: nn.Module, positions: Sequence[int]) -> nn.Module:
    """A view of ``backbone`` (same modules, same weights) that taps only the layers at ``positions``.

    For saving a grid head that reads a subset of the layers as a standalone ``DenseModel``.
    """
    if list(positions) == list(range(len(backbone.layers))):
        return backbone
    view = copy.copy(backbone)
    view.layers = [backbone.layers[p] for p in positions]
    view.out_channels = [backbone.out_channels[p] for p in positions]
    return view


class HeadGrid(nn.Module):
    """A backbone and ``G`` heads.

    Args:
        backbone: a ``Backbone`` / ``TimmBackbone``.
        heads: ``G`` heads with the same number of outputs ``K``.
        positions: for each head, the positions in ``backbone.layers`` it reads.

    ``forward(pixel_values, spatial_shapes, pixel_attention_mask=None, features=None)`` ->
    ``[B, G * K, Hmax, Wmax]``: head ``g``'s outputs are channels ``g*K .. (g+1)*K - 1``. Pass
    ``features`` (a :class:`DenseFeatures` from a cache) to skip the backbone.
    """

    def __init__(self, backbone: nn.Module, heads: Sequence[nn.Module], positions: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(heads) != len(positions) or not heads:
            raise ConfigError(f"HeadGrid: {len(heads)} heads for {len(positions)} layer choices")
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        self.positions = [list(p) for p in positions]

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        pixel_attention_mask: torch.Tensor | None = None,
        features: DenseFeatures | None = None,
    ) -> torch.Tensor:
        if features is None:
            features = self.backbone(pixel_values, spatial_shapes, pixel_attention_mask)
        outputs = []
        for head, positions in zip(self.heads, self.positions):
            chosen = cast_features(select_layers(features, positions), head_dtype(head))
            outputs.append(head(chosen))
        return torch.cat(outputs, dim=1)

    def split(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        """``[B, G * K, ...]`` -> G tensors ``[B, K, ...]``."""
        return list(outputs.chunk(self.num_heads, dim=1))


def trained_tensors(grid: nn.Module) -> dict[str, torch.Tensor]:
    """Every head's state dict (``heads.<g>.<key>``) and the tuned backbone parameters (``backbone.<name>``)."""
    tensors = {f"heads.{key}": value for key, value in grid.heads.state_dict().items()}
    tensors.update({f"backbone.{name}": p for name, p in tuned_parameters(grid.backbone).items()})
    return {key: value.detach().cpu().contiguous() for key, value in tensors.items()}


def load_trained_tensors(grid: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Load :func:`trained_tensors` back, strictly (missing, unexpected and mis-shaped keys are errors)."""
    expected = {f"heads.{k}": v.shape for k, v in grid.heads.state_dict().items()}
    tuned = tuned_parameters(grid.backbone)
    expected.update({f"backbone.{name}": p.shape for name, p in tuned.items()})
    check_keys_and_shapes(saved, expected, "checkpoint model")
    grid.heads.load_state_dict({k[len("heads."):]: v for k, v in saved.items() if k.startswith("heads.")}, strict=True)
    with torch.no_grad():
        for name, parameter in tuned.items():
            parameter.copy_(saved[f"backbone.{name}"])
