"""Any timm ViT behind the :class:`~siglip2_dense.backbone.siglip.Backbone` interface.

For side-by-side comparisons (DINOv2, timm's own SigLIP towers) on the same heads. Features
come from timm's ``forward_intermediates`` with the model built at ``dynamic_img_size=True``,
so images of any size (padded to a multiple of the patch size) go through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from siglip2_dense.backbone.block_tuning import BlockTuning
from siglip2_dense.backbone.features import DenseFeatures, grid_mask
from siglip2_dense.backbone.layer_indices import resolve_layer_indices
from siglip2_dense.backbone.preprocess import images_to_arrays
from siglip2_dense.errors import CheckpointError, RequestError


class TimmBackbone(BlockTuning):
    """A timm Vision Transformer returning :class:`DenseFeatures`.

    Args:
        model: a timm model with ``forward_intermediates`` and ``patch_embed``.
        layers, norm, freeze, tune_last_blocks: as :class:`~siglip2_dense.backbone.siglip.Backbone`.
        name_or_path: ``"timm:<name>"``, recorded in saved heads.
    """

    is_naflex = False

    def __init__(
        self,
        model: nn.Module,
        layers: int | Sequence[int] = 1,
        norm: bool = True,
        freeze: bool = True,
        tune_last_blocks: int = 0,
        name_or_path: str = "",
    ) -> None:
        super().__init__()
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "blocks"):
            raise CheckpointError(f"timm model {name_or_path!r} has no forward_intermediates; expected a ViT")
        self.model = model
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.embed_dim = int(model.embed_dim)
        self.num_blocks = len(model.blocks)
        self.layers = resolve_layer_indices(layers, self.num_blocks)
        self.out_channels = [self.embed_dim] * len(self.layers)
        self.norm = bool(norm)
        self.name_or_path = name_or_path
        self.has_pooling_head = True
        data_config = model.pretrained_cfg
        self.register_buffer("mean", torch.tensor(data_config.get("mean", (0.5, 0.5, 0.5))).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(data_config.get("std", (0.5, 0.5, 0.5))).view(1, 3, 1, 1), False)
        blocks = list(model.blocks)
        stem = [m for name, m in model.named_children() if name not in ("blocks", "norm", "fc_norm", "head",
                                                                        "head_drop", "attn_pool")]
        tail = [m for name, m in model.named_children() if name in ("norm", "fc_norm", "head", "attn_pool")]
        self.configure_tuning(freeze, tune_last_blocks, tower=model, stem=stem, blocks=blocks, tail=tail)
        # parameters that sit on the model itself (cls token, position table) belong to the stem
        for parameter in model._parameters.values():
            if parameter is not None:
                parameter.requires_grad_(self.first_tuned_block == 0)

    @classmethod
    def create(
        cls, name: str, pretrained: bool = True, dtype: torch.dtype = torch.float32,
        device: torch.device | None = None, **kwargs: Any,
    ) -> TimmBackbone:
        """Build ``timm.create_model(name, pretrained=..., dynamic_img_size=True)`` and wrap it."""
        import timm

        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=0, dynamic_img_size=True)
        except (RuntimeError, OSError, TypeError) as error:
            raise CheckpointError(f"timm cannot build {name!r}: {error}") from error
        return cls(model, name_or_path=f"timm:{name}", **kwargs).to(device=device, dtype=dtype)

    def preprocess(
        self, images: Any, max_num_patches: int | None = None, size: int | Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Normalise with the model's mean/std, optionally resize, pad right/bottom to the patch grid.

        Returns ``pixel_values [B, 3, H, W]`` and ``spatial_shapes [B, 2]`` as the FixRes backbone.
        """
        if max_num_patches is not None:
            raise RequestError(f"max_num_patches={max_num_patches}: timm backbones take size=(H, W)")
        arrays = images_to_arrays(images)
        tensors = []
        for array in arrays:
            t = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255.0
            if size is not None:
                target = (size, size) if isinstance(size, int) else tuple(size)
                t = torch.nn.functional.interpolate(t, size=target, mode="bicubic", align_corners=False,
                                                    antialias=True)
            tensors.append(((t - self.mean.cpu().float()) / self.std.cpu().float())[0])
        grids = [(math.ceil(t.shape[1] / self.patch_size), math.ceil(t.shape[2] / self.patch_size)) for t in tensors]
        batch = torch.zeros(len(tensors), 3, max(g[0] for g in grids) * self.patch_size,
                            max(g[1] for g in grids) * self.patch_size)
        for i, t in enumerate(tensors):
            batch[i, :, : t.shape[1], : t.shape[2]] = t
        param = next(self.model.parameters())
        return {
            "pixel_values": batch.to(device=param.device, dtype=param.dtype),
            "spatial_shapes": torch.tensor(grids, dtype=torch.long, device=param.device),
        }

    def forward(
        self, pixel_values: torch.Tensor, spatial_shapes: torch.Tensor, pixel_attention_mask: torch.Tensor | None = None
    ) -> DenseFeatures:
        """``pixel_values [B, 3, H, W]`` -> :class:`DenseFeatures` with ``H/p x W/p`` grids."""
        spatial_shapes = spatial_shapes.to(pixel_values.device).long()
        height, width = pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size
        mask = grid_mask(spatial_shapes, height, width)
        in_block_order = sorted(self.layers)
        final, maps = self.model.forward_intermediates(
            pixel_values, indices=in_block_order, norm=self.norm, output_fmt="NCHW",
            attn_mask=self._padding_attention_mask(mask, pixel_values.dtype),
        )
        by_block = dict(zip(in_block_order, maps))
        maps = [by_block[index] * mask[:, None].to(by_block[index].dtype) for index in self.layers]
        pooled = self.model.forward_head(final, pre_logits=True)
        return DenseFeatures(maps=maps, mask=mask, grid_sizes=spatial_shapes, pooled=pooled)

    def _padding_attention_mask(self, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
        """Additive ``[B, 1, 1, prefix + H*W]`` mask keeping attention off padded patches; None if none.

        Real patches then never attend to padding. Position embeddings are still interpolated to
        the padded canvas (timm's ``dynamic_img_size``), so an image batched with larger ones is
        close to, not equal to, the same image alone; batch images of one size for exact features.
        """
        if bool(mask.all()):
            return None
        prefix = int(getattr(self.model, "num_prefix_tokens", 0))
        keep = torch.cat([mask.new_ones(mask.shape[0], prefix), mask.flatten(1)], dim=1)
        additive = torch.zeros(keep.shape, dtype=dtype, device=mask.device)
        additive.masked_fill_(~keep, torch.finfo(dtype).min)
        return additive[:, None, None, :]
