"""The DPT decoder (Ranftl et al., "Vision Transformers for Dense Prediction", 2021) on four layers.

Four tapped layers are reassembled at 4x, 2x, 1x and 1/2x the patch grid, projected to a common
width, and fused coarse to fine by residual fusion blocks that each upsample 2x; the fused map
is 8x the patch grid (stride ``patch_size / 8`` in pixels). On it runs a segmentation head (3x3
conv, norm, ReLU, dropout, 1x1 conv) or one of two depth heads:

- ``depth_output="bins"``: 3x3 conv, ReLU, 1x1 conv to depth bins, expectation over bin centres
  (at 8x; TIPS's DPT also predicts 256 bins at 8x, google-deepmind/tips ``pytorch/decoders.py``);
- ``depth_output="regression"``: DINOv2's DPT depth head (facebookresearch/dinov2
  ``dinov2/eval/depth/models/decode_heads/dpt_head.py``): ``project`` 3x3 conv F->F + ReLU, then
  ``HeadDepth`` (lines 31-39): 3x3 conv F->F/2, 2x bilinear upsampling, 3x3 conv ->32, ReLU,
  1x1 conv ->1, and ``relu(x) + min_depth`` (``decode_head.py``, ``classify=False``): depth at
  16x the patch grid.

Output resolution (``output_resolution``): ``"decoder"`` returns the decoder's own map, 8x (bins)
or 16x (regression) the padded patch grid, as DINOv2 and TIPS train and evaluate it (``output_scale``
cells per patch side); ``"patch"`` (the default, and every model saved before the option) averages
it over each patch's block back to the patch grid ``[B, K, Hmax, Wmax]`` (each block lies inside
its patch, so no padding mixes in). :meth:`DPTHead.forward_fine` always returns the decoder's map
with its mask.

Padding: every stage is padding-safe (:mod:`.dpt_blocks`), so an image's outputs do not depend on
the other images of its batch. Odd grids are handled exactly: the 1/2x stage has ``ceil(h / 2)``
rows, and its 2x upsampling is cropped back to ``h``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.errors import RequestError

from .depth_bins import DepthFromBins, check_depth_range
from .dpt_blocks import READOUTS, STAGE_SCALES, FusionBlock, Reassemble, masked_conv
from .head_inputs import checked_channels, masked_maps, pooled_embedding
from .masked_batch_norm import MaskedBatchNorm2d
from .padded_grid import grid_sizes_at, mask_like, pool_to_grid, upsample2x, zero_padding

TASKS = ("segmentation", "depth")
# a depth DPT's range when not given: BinsDepthHead's defaults (DINOv2's NYUv2 probe: 256 uniform bins, 1e-3..10 m)
DEPTH_DEFAULTS = {"min_depth": 1e-3, "max_depth": 10.0, "num_bins": 256, "bin_spacing": "uniform"}
FINE_SCALE = 8  # the fused map's resolution relative to the patch grid
DEPTH_OUTPUTS = ("bins", "regression")
OUTPUT_RESOLUTIONS = ("patch", "decoder")
REGRESSION_WIDTH = 32  # dinov2 dpt_head.py HeadDepth: nn.Conv2d(features // 2, 32, kernel_size=3, ...)


def default_fusion_width(in_channels: Sequence[int]) -> int:
    """A third of the widest layer, between 8 and 256 (DPT uses 256 for ViT-B/L)."""
    return min(256, max(8, max(in_channels) // 3))


def default_reassemble_channels(in_channels: Sequence[int]) -> list[int]:
    """``[C0 / 8, C1 / 4, C2 / 2, C3]`` for the 4x, 2x, 1x, 1/2x stages (DINOv2's DPT; 96..768 on ViT-B)."""
    return [max(1, channels // 2 ** (3 - stage)) for stage, channels in enumerate(in_channels)]


class DPTHead(nn.Module):
    """DPT decoder for segmentation logits or metric depth.

    Args:
        in_channels: the backbone's ``out_channels``: exactly four layers, shallow to deep
            (e.g. ``layers=[2, 5, 8, 11]`` on a 12-block ViT, as DPT-Base).
        num_classes: K, the number of classes (segmentation only, required there; as
            :class:`LinearHead`). A depth DPT predicts one value per cell and takes no class count.
        task: ``"segmentation"`` (logits) or ``"depth"`` (metres from depth bins).
        features: F, the fusion width (default :func:`default_fusion_width`).
        reassemble_channels: four widths of the reassembled layers (default
            :func:`default_reassemble_channels`).
        readout: how the pooled MAP-head embedding enters each layer: ``"ignore"``, ``"add"``
            (needs ``pooled_channels`` equal to every layer's width) or ``"project"`` (concatenate,
            1x1 conv back to the layer width, GELU), DPT's readout options.
        pooled_channels: width of the pooled embedding (default: ``in_channels[-1]``).
        use_batchnorm: BatchNorm in the residual units and the segmentation head (default: True for
            segmentation, False for depth, as DPT).
        dropout: dropout before the segmentation classifier.
        min_depth, max_depth, num_bins, bin_spacing: depth only, as :class:`BinsDepthHead`
            (defaults 1e-3, 10.0, 256, ``"uniform"``); a segmentation DPT refuses them.
        depth_output: ``"bins"`` or ``"regression"`` (DINOv2's ``HeadDepth``, 16x); depth only.
        output_resolution: ``"patch"`` (the decoder's map averaged to the patch grid) or
            ``"decoder"`` (the decoder's own resolution, 8x or 16x the grid).
        channels_last: keep convolution weights and activations in channels-last memory order
            (1.02-1.12x faster on CPU over seven runs of ``benchmarks/cpu_options.py``, median
            1.08x; the outputs are the same).

    ``forward(features) -> [B, K, s*Hmax, s*Wmax]`` (logits, or depth in metres with K = 1), zero on
    padded cells, ``s = output_scale`` (1 for ``output_resolution="patch"``);
    ``forward_fine(features)`` -> the decoder's map (8x or 16x the patch grid) and its mask.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int | None = None,
        task: str = "segmentation",
        features: int | None = None,
        reassemble_channels: Sequence[int] | None = None,
        readout: str = "ignore",
        pooled_channels: int | None = None,
        use_batchnorm: bool | None = None,
        dropout: float = 0.0,
        min_depth: float | None = None,
        max_depth: float | None = None,
        num_bins: int | None = None,
        bin_spacing: str | None = None,
        channels_last: bool = True,
        depth_output: str = "bins",
        output_resolution: str = "patch",
    ) -> None:
        super().__init__()
        channels = checked_channels(in_channels, "DPTHead")
        if len(channels) != len(STAGE_SCALES):
            raise RequestError(
                f"DPTHead: in_channels={channels} has {len(channels)} layers; DPT fuses exactly 4 (load the "
                "backbone with layers=4 or four block indices such as [2, 5, 8, 11])"
            )
        if task not in TASKS:
            raise RequestError(f"DPTHead: task={task!r}; expected one of {', '.join(TASKS)}")
        depth_range = dict(min_depth=min_depth, max_depth=max_depth, num_bins=num_bins, bin_spacing=bin_spacing)
        if task == "segmentation":
            if num_classes is None or int(num_classes) < 1:
                raise RequestError(f"DPTHead: num_classes={num_classes} for task='segmentation'; expected K >= 1")
            given = sorted(k for k, v in depth_range.items() if v is not None)
            if given:
                raise RequestError(f"DPTHead: {', '.join(given)} given for task='segmentation'; the depth range "
                                   "belongs to task='depth'")
        elif num_classes is not None:
            raise RequestError(f"DPTHead: num_classes={num_classes} for task='depth'; a depth head predicts one "
                               "value per cell, leave num_classes out (it takes min_depth, max_depth, num_bins, "
                               "bin_spacing)")
        if depth_output not in DEPTH_OUTPUTS:
            raise RequestError(f"DPTHead: depth_output={depth_output!r}; expected one of {', '.join(DEPTH_OUTPUTS)}")
        if output_resolution not in OUTPUT_RESOLUTIONS:
            raise RequestError(f"DPTHead: output_resolution={output_resolution!r}; expected one of "
                               f"{', '.join(OUTPUT_RESOLUTIONS)}")
        regression = depth_output == "regression"
        if regression and task != "depth":
            raise RequestError("DPTHead: depth_output='regression' is a depth head; task='segmentation' predicts logits")
        if regression and (num_bins is not None or bin_spacing is not None):
            raise RequestError(f"DPTHead: num_bins={num_bins}, bin_spacing={bin_spacing!r} with "
                               "depth_output='regression', which predicts depth directly; leave them out")
        if readout not in READOUTS:
            raise RequestError(f"DPTHead: readout={readout!r}; expected one of {', '.join(READOUTS)}")
        if not 0.0 <= dropout < 1.0:
            raise RequestError(f"DPTHead: dropout={dropout}; expected a probability in [0, 1)")
        if task == "depth":
            depth_range = {k: DEPTH_DEFAULTS[k] if v is None else v for k, v in depth_range.items()}
            check_depth_range(depth_range["min_depth"], depth_range["max_depth"], depth_range["num_bins"],
                              depth_range["bin_spacing"], "DPTHead")
            if regression:  # no bins: the default count and spacing were only filled in for the check
                depth_range.update(num_bins=None, bin_spacing=None)
        width = int(features) if features is not None else default_fusion_width(channels)
        stages = (checked_channels(reassemble_channels, "DPTHead reassemble_channels")
                  if reassemble_channels is not None else default_reassemble_channels(channels))
        if width < 2 or len(stages) != len(STAGE_SCALES):
            raise RequestError(
                f"DPTHead: features={width}, reassemble_channels={stages}; expected features >= 2 and 4 widths"
            )
        pooled_width = int(pooled_channels) if pooled_channels is not None else channels[-1]
        if readout == "add" and any(c != pooled_width for c in channels):
            raise RequestError(
                f"DPTHead: readout='add' needs the pooled width ({pooled_width}) to equal every layer's {channels}"
            )
        batchnorm = (task == "segmentation") if use_batchnorm is None else bool(use_batchnorm)
        # the keywords this task takes (the depth range resolved), so build_head(**config) rebuilds this head
        task_keywords = (dict(num_classes=int(num_classes)) if task == "segmentation" else
                         dict(min_depth=float(depth_range["min_depth"]), max_depth=float(depth_range["max_depth"]),
                              num_bins=None if regression else int(depth_range["num_bins"]),
                              bin_spacing=depth_range["bin_spacing"]))
        self.config = dict(
            in_channels=channels, task=task, **task_keywords, features=features,
            reassemble_channels=list(reassemble_channels) if reassemble_channels is not None else None,
            readout=readout, pooled_channels=pooled_channels, use_batchnorm=use_batchnorm,
            dropout=float(dropout), channels_last=bool(channels_last),
        )
        if depth_output != "bins" or output_resolution != "patch":  # saved configs of older models stay as they were
            self.config.update(depth_output=depth_output, output_resolution=output_resolution)
        self.in_channels, self.task, self.readout, self.pooled_channels = channels, task, readout, pooled_width
        self.reassemble = nn.ModuleList(
            Reassemble(c, r, up, down, readout, pooled_width)
            for c, r, (up, down) in zip(channels, stages, STAGE_SCALES)
        )
        self.stage_convs = nn.ModuleList(nn.Conv2d(r, width, kernel_size=3, padding=1, bias=False) for r in stages)
        self.fusion = nn.ModuleList(FusionBlock(width, batchnorm, has_skip=i > 0) for i in range(len(stages)))
        self.regression = regression
        self.fine_scale = FINE_SCALE * (2 if regression else 1)
        self.output_scale = self.fine_scale if output_resolution == "decoder" else 1
        output_width = width if task == "segmentation" or regression else max(1, width // 2)
        self.output_conv = nn.Conv2d(width, output_width,
                                     kernel_size=3, padding=1, bias=not (batchnorm and task == "segmentation"))
        # DINOv2's HeadDepth after its project conv: 3x3 F -> F/2, (2x up), 3x3 F/2 -> 32, ReLU, 1x1 -> 1
        self.upsample_conv = nn.Conv2d(width, max(1, width // 2), kernel_size=3, padding=1) if regression else None
        self.refine_conv = (nn.Conv2d(max(1, width // 2), REGRESSION_WIDTH, kernel_size=3, padding=1)
                            if regression else None)
        self.output_norm = MaskedBatchNorm2d(width) if batchnorm and task == "segmentation" else None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        outputs = (int(num_classes) if task == "segmentation" else 1 if regression else int(depth_range["num_bins"]))
        self.classifier = nn.Conv2d(REGRESSION_WIDTH if regression else self.output_conv.out_channels, outputs,
                                    kernel_size=1)
        self.to_depth = (DepthFromBins(float(depth_range["min_depth"]), float(depth_range["max_depth"]),
                                       int(depth_range["num_bins"]), depth_range["bin_spacing"])
                         if task == "depth" and not regression else None)
        self.min_depth = float(depth_range["min_depth"]) if task == "depth" else None
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    def forward_fine(self, features: DenseFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """:class:`DenseFeatures` -> ``([B, K, s*Hmax, s*Wmax], mask [B, s*Hmax, s*Wmax])``, zero on padding;
        ``s`` = 8, or 16 for ``depth_output="regression"``."""
        maps = masked_maps(features, self.in_channels, "DPTHead")
        if self.channels_last:
            maps = [m.contiguous(memory_format=torch.channels_last) for m in maps]
        pooled = None
        if self.readout != "ignore":
            pooled = pooled_embedding(features, self.pooled_channels, "DPTHead").to(maps[0].dtype)
        sizes = features.grid_sizes.to(maps[0].device).long()
        height, width = maps[0].shape[-2:]
        stages = []
        for feature_map, reassemble, conv, (up, down) in zip(maps, self.reassemble, self.stage_convs, STAGE_SCALES):
            x = reassemble(feature_map, pooled, sizes)
            mask = mask_like(x, grid_sizes_at(sizes, up, down))
            stages.append((masked_conv(conv, x, mask, mask), grid_sizes_at(sizes, up, down)))
        x, x_sizes = stages[-1]
        for index, block in enumerate(self.fusion):
            skip = stages[len(stages) - 1 - index][0] if index > 0 else None
            up = 2 ** index  # coarse to fine: 1/2x -> 1x -> 2x -> 4x -> 8x
            out_sizes = grid_sizes_at(sizes, up)
            x = block(x, x_sizes, skip, out_sizes, (height * up, width * up))
            x_sizes = out_sizes
        fine_mask = mask_like(x, x_sizes)
        if self.regression:
            return self._regress(x, x_sizes, fine_mask)
        x = masked_conv(self.output_conv, x, fine_mask, fine_mask)
        x = self.output_norm(x, fine_mask) if self.output_norm is not None else x
        x = self.classifier(self.dropout(torch.relu(x)))
        if self.to_depth is not None:
            x = self.to_depth(x)
        return zero_padding(x, fine_mask), fine_mask

    def _regress(
        self, x: torch.Tensor, sizes: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """DINOv2's ``project`` + ``HeadDepth`` on the fused 8x map -> depth ``[B, 1, 16*Hmax, 16*Wmax]`` and its mask.

        The 2x upsampling is padding-safe bilinear with ``align_corners=False`` (DINOv2: True).
        """
        x = torch.relu(masked_conv(self.output_conv, x, mask, mask))
        x = masked_conv(self.upsample_conv, x, mask, mask)
        out_sizes = grid_sizes_at(sizes, 2)
        x = upsample2x(x, sizes, out_sizes, (x.shape[-2] * 2, x.shape[-1] * 2))
        fine_mask = mask_like(x, out_sizes)
        x = torch.relu(masked_conv(self.refine_conv, x, fine_mask, fine_mask))
        depth = torch.relu(self.classifier(x).float()) + self.min_depth  # decode_head.py: relu(conv) + min_depth
        return zero_padding(depth, fine_mask), fine_mask

    def forward(self, features: DenseFeatures) -> torch.Tensor:
        """:class:`DenseFeatures` -> ``[B, K, s*Hmax, s*Wmax]``: the decoder's map (``output_resolution="decoder"``)
        or its mean over each patch's block (``"patch"``, s = 1)."""
        fine, _ = self.forward_fine(features)
        return fine if self.output_scale != 1 else pool_to_grid(fine, self.fine_scale)
