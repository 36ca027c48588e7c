"""A trained open-vocabulary head: CAT-Seg's cost aggregation on a SigLIP / SigLIP2 tower.

Cho et al., "CAT-Seg: Cost Aggregation for Open-Vocabulary Semantic Segmentation" (CVPR 2024);
github.com/cvlab-kaist/CAT-Seg (``cat_seg/modeling/transformer/model.py`` ``Aggregator``,
``cat_seg/cat_seg_model.py``, ``configs/vitl_336.yaml``). The data path::

    last block's tokens -> post_layernorm -> MAP value path f = out_proj(v_proj(x)); f += mlp(ln(f))   [B, D, H, W]
    text: one embedding per class and template (synonyms averaged per template)               [T, P, D]
    cost = cos(f, text) per template                                                            [B, T, P, H, W]
    -> 7 x 7 conv over the P templates -> C = 128 channels per class                            [B, T, C, H, W]
    -> num_layers x (spatial aggregation: two Swin blocks per class, appearance guidance =
                     3 x 3 conv of f; class aggregation: linear attention across classes,
                     text guidance = linear map of the template-mean text)
    -> decoder: two (2x transposed conv, + guidance from two earlier blocks, DoubleConv) steps
    -> 3 x 3 conv -> one logit per class                                                        [B, T, 4H, 4W]

The decoder's guidance (CAT-Seg ``CATSeg.upsample1`` / ``upsample2``): the output of an earlier block
through ``ConvTranspose2d(width, 256, 2, stride 2)`` for the first step, of a later one through
``ConvTranspose2d(width, 128, 4, stride 4)`` for the second (blocks 3 and 7 of ViT-B/16, 7 and 15 of
ViT-L/14: a third and two thirds of the depth), each then ``3 x 3 conv + ReLU`` to 32 and 16 channels.

The backbone is loaded with ``layers=[early, late, last]`` and ``norm=False``: this head applies the
tower's own ``post_layernorm`` and MAP value path (those of
:class:`~siglip2_dense.heads.openvocab.OpenVocabHead`) to the last map, borrowing them from the tower
(:meth:`CostAggregationHead.bind_backbone`), so their weights stay the tower's, frozen as CAT-Seg keeps
CLIP's projection. The vocabulary is an input: ``forward(features, text_embeddings)`` with any number of
classes, or the one set by :meth:`CostAggregationHead.set_vocabulary` (the training classes). More than
``pad_len`` classes: CAT-Seg keeps, per image, the ``pad_len`` classes with the highest cost anywhere in
the image and gives the others logit -100.

Defaults are CAT-Seg's ViT-L/14 configuration (``configs/vitl_336.yaml``): NUM_LAYERS 2, HIDDEN_DIMS 128,
NUM_HEADS 4, POOLING_SIZES [2, 2], WINDOW_SIZES 12, TEXT / APPEARANCE_GUIDANCE_PROJ_DIM 128,
DECODER_DIMS [64, 32], DECODER_GUIDANCE_DIMS [256, 128], DECODER_GUIDANCE_PROJ_DIMS [32, 16], pad_len 256
(``Aggregator``'s default). Deviations: see :mod:`~siglip2_dense.heads.cost_aggregation_blocks` (padded
grids) and ``window_size`` (cells; CAT-Seg's 12 on a 24 x 24 grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.errors import RequestError
from siglip2_dense.heads.openvocab import map_value_path

from .cost_aggregation_blocks import ClassAggregation, SpatialAggregation, UpBlock, masks_at
from .head_inputs import checked_channels, masked_maps
from .padded_grid import zero_padding

UNSELECTED_LOGIT = -100.0  # CAT-Seg Aggregator.forward: classes beyond pad_len get -100
OUTPUT_SCALE = 4  # two 2x decoder steps


class CostAggregationHead(nn.Module):
    """Per-class logits at 4x the patch grid from the cost volume of patch and text embeddings.

    Args:
        in_channels: the backbone's three tapped maps ``[early, late, last]`` (``backbone.out_channels``).
        num_classes: the training vocabulary's size (the classes of ``labels``; validation's class count).
        labels: the training vocabulary: a label file, a packaged vocabulary or a list (read by
            :func:`~siglip2_dense.build.build_head_from_config` to embed the classes).
        templates: the prompt templates (``single``, ``imagenet80`` or a list with ``{}``): their count is
            the cost volume's channels, so evaluation must use the same ones.
        embed_dim: ``D`` of the joint image-text space (the MAP head's output); None: ``in_channels[-1]``.
        hidden_dim, num_layers, num_heads, pooling, window_size, pad_len, text_guidance_dim,
        appearance_guidance_dim, decoder_dims, decoder_guidance_dims, decoder_guidance_proj_dims:
            CAT-Seg's ``Aggregator`` arguments (module docstring).
        class_chunk: classes per pass of the spatial aggregation and the decoder (memory, not results).
    """

    learns_from_labels = True

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        labels: str | Sequence[str],
        templates: str | Sequence[str] = "single",
        embed_dim: int | None = None,
        hidden_dim: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        pooling: int = 2,
        window_size: int = 12,
        pad_len: int = 256,
        text_guidance_dim: int = 128,
        appearance_guidance_dim: int = 128,
        decoder_dims: Sequence[int] = (64, 32),
        decoder_guidance_dims: Sequence[int] = (256, 128),
        decoder_guidance_proj_dims: Sequence[int] = (32, 16),
        class_chunk: int = 64,
    ) -> None:
        super().__init__()
        from siglip2_dense.text.prompts import resolve_templates

        name = "CostAggregationHead"
        self.in_channels = checked_channels(in_channels, name)
        if len(self.in_channels) != 3:
            raise RequestError(f"{name}: in_channels={list(in_channels)}; expected three maps (two earlier "
                               "blocks for the decoder's guidance and the last block), e.g. layers=[3, 7, 11]")
        if num_classes < 1 or window_size < 1 or num_layers < 1 or class_chunk < 1 or pad_len < 0:
            raise RequestError(f"{name}: num_classes={num_classes}, window_size={window_size}, num_layers="
                               f"{num_layers}, class_chunk={class_chunk} must be >= 1 and pad_len={pad_len} >= 0")
        if len(decoder_dims) != 2 or len(decoder_guidance_dims) != 2 or len(decoder_guidance_proj_dims) != 2:
            raise RequestError(f"{name}: decoder_dims, decoder_guidance_dims and decoder_guidance_proj_dims "
                               "take two values each (two 2x decoder steps)")
        self.num_classes = int(num_classes)
        self.labels = labels if isinstance(labels, str) else list(labels)
        self.templates = templates if isinstance(templates, str) else list(templates)
        self.num_templates = len(resolve_templates(templates))
        self.embed_dim = int(embed_dim or self.in_channels[-1])
        self.class_chunk = int(class_chunk)
        self.pad_len = int(pad_len)
        self.output_scale = OUTPUT_SCALE
        width_early, width_late, _ = self.in_channels

        # CAT-Seg Aggregator.conv1: the templates' costs -> hidden_dim channels, 7 x 7
        self.cost_embed = nn.Conv2d(self.num_templates, hidden_dim, kernel_size=7, padding=3)
        self.appearance_guidance = nn.Conv2d(self.embed_dim, appearance_guidance_dim, kernel_size=3, padding=1)
        self.text_guidance = nn.Linear(self.embed_dim, text_guidance_dim)
        self.spatial = nn.ModuleList([
            SpatialAggregation(hidden_dim, appearance_guidance_dim, num_heads, window_size) for _ in range(num_layers)
        ])
        self.classes = nn.ModuleList([
            ClassAggregation(hidden_dim, text_guidance_dim, num_heads, pooling, pad_len) for _ in range(num_layers)
        ])
        # CAT-Seg CATSeg.upsample1 / upsample2, then Aggregator.decoder_guidance_projection
        self.upsample_early = nn.ConvTranspose2d(width_early, decoder_guidance_dims[0], kernel_size=2, stride=2)
        self.upsample_late = nn.ConvTranspose2d(width_late, decoder_guidance_dims[1], kernel_size=4, stride=4)
        self.project_early = nn.Conv2d(decoder_guidance_dims[0], decoder_guidance_proj_dims[0], 3, padding=1)
        self.project_late = nn.Conv2d(decoder_guidance_dims[1], decoder_guidance_proj_dims[1], 3, padding=1)
        self.decoder1 = UpBlock(hidden_dim, decoder_dims[0], decoder_guidance_proj_dims[0])
        self.decoder2 = UpBlock(decoder_dims[0], decoder_dims[1], decoder_guidance_proj_dims[1])
        self.predict = nn.Conv2d(decoder_dims[1], 1, kernel_size=3, padding=1)
        self.config = {
            "num_classes": self.num_classes, "labels": self.labels, "templates": self.templates,
            "embed_dim": embed_dim, "hidden_dim": hidden_dim, "num_layers": num_layers, "num_heads": num_heads,
            "pooling": pooling, "window_size": window_size, "pad_len": pad_len,
            "text_guidance_dim": text_guidance_dim, "appearance_guidance_dim": appearance_guidance_dim,
            "decoder_dims": list(decoder_dims), "decoder_guidance_dims": list(decoder_guidance_dims),
            "decoder_guidance_proj_dims": list(decoder_guidance_proj_dims), "class_chunk": class_chunk,
        }
        self._tower: tuple[nn.Module, ...] = ()
        self.register_buffer("vocabulary", torch.empty(0), persistent=False)

    # --- what the head borrows and is given ---------------------------------------------------
    def bind_backbone(self, backbone: nn.Module) -> None:
        """Borrow ``backbone``'s final layernorm and MAP head (a SigLIP / SigLIP2 tower loaded with
        ``norm=False`` and the last block as its last tapped layer).

        Raises:
            RequestError: a backbone without a MAP head, with the final norm applied, or whose last tap is
                not the last block (the messages say which).
        """
        vision_model = getattr(backbone, "vision_model", None)
        if vision_model is None or getattr(vision_model, "head", None) is None:
            raise RequestError("CostAggregationHead needs a SigLIP / SigLIP2 tower with its MAP head "
                               f"(vision_use_head=True); got {type(backbone).__name__}")
        if backbone.norm or list(backbone.layers)[-1] != backbone.num_blocks - 1:
            raise RequestError(
                f"CostAggregationHead reads two earlier blocks and the last one before the final layernorm: load "
                f"the backbone with layers=[early, late, {backbone.num_blocks - 1}], norm=False (got layers="
                f"{list(backbone.layers)}, norm={backbone.norm})"
            )
        self._tower = (vision_model,)

    def set_vocabulary(self, text_embeddings: Tensor) -> None:
        """The classes :meth:`forward` scores when it is given none: ``[T, P, D]`` per-template embeddings."""
        self.vocabulary = self.checked_text(text_embeddings).to(self.cost_embed.weight.device)

    def checked_text(self, text_embeddings: Tensor) -> Tensor:
        """``[T, P, D]`` (``[T, D]`` taken as one template) as float32, or an error naming the expected shape."""
        if text_embeddings.ndim == 2:
            text_embeddings = text_embeddings[:, None]
        if text_embeddings.ndim != 3 or text_embeddings.shape[1:] != (self.num_templates, self.embed_dim):
            raise RequestError(
                f"CostAggregationHead: text embeddings {tuple(text_embeddings.shape)}; expected [classes, "
                f"{self.num_templates} templates, {self.embed_dim}] (built with templates={self.templates!r})"
            )
        return text_embeddings.float()

    # --- the pieces of the forward ----------------------------------------------------------
    def patch_embeddings(self, last: Tensor, mask: Tensor) -> Tensor:
        """The last block's map ``[B, C, H, W]`` -> joint-space embeddings ``[B, D, H, W]``, zero at padding."""
        if not self._tower:
            raise RequestError("CostAggregationHead: call bind_backbone(backbone) first (build_head_from_config "
                               "and DenseModel do)")
        vision_model = self._tower[0]
        tokens = vision_model.post_layernorm(last.permute(0, 2, 3, 1).to(vision_model.post_layernorm.weight.dtype))
        embedded = map_value_path(vision_model, tokens, mlp=True).float()
        return zero_padding(embedded.permute(0, 3, 1, 2), mask)

    def cost_volume(self, image: Tensor, text: Tensor) -> Tensor:
        """Cosines ``[B, T, P, H, W]`` of ``image [B, D, H, W]`` and ``text [T, P, D]`` (CAT-Seg ``correlation``)."""
        return torch.einsum("bdhw,tpd->btphw", F.normalize(image, dim=1), F.normalize(text, dim=-1))

    def select_classes(self, cost: Tensor, mask: Tensor) -> Tensor | None:
        """With more than ``pad_len`` classes, each image's ``pad_len`` classes of highest cost anywhere
        (over templates and real cells): ``[B, pad_len]`` long; else None."""
        if self.pad_len == 0 or cost.shape[1] <= self.pad_len:
            return None
        real = mask[:, None, None].expand_as(cost)
        best = cost.masked_fill(~real, float("-inf")).flatten(2).amax(dim=-1)  # [B, T]
        return best.topk(self.pad_len, dim=-1, sorted=False).indices

    def forward(self, features: DenseFeatures, text_embeddings: Tensor | None = None) -> Tensor:
        """Per-class logits on the 4x padded grid.

        Args:
            features: ``maps`` = the early, late and last blocks ``[B, C_i, H, W]``, ``mask [B, H, W]``.
            text_embeddings: ``[T, P, D]`` the classes' per-template embeddings (any ``T``); None: the
                vocabulary of :meth:`set_vocabulary`.

        Returns:
            ``[B, T, 4H, 4W]`` float32 logits, zero outside each image's ``(4h, 4w)`` cells.
        """
        text = self.vocabulary if text_embeddings is None else self.checked_text(text_embeddings)
        if text.numel() == 0:
            raise RequestError("CostAggregationHead: no vocabulary; pass text_embeddings [T, P, D] or call "
                               "set_vocabulary (build_head_from_config embeds head.args.labels)")
        text = text.to(features.mask.device)
        early, late, last = masked_maps(features, self.in_channels, "CostAggregationHead")
        mask = features.mask
        image = self.patch_embeddings(last, mask)
        cost = self.cost_volume(image, text)  # [B, T, P, H, W]
        selected = self.select_classes(cost, mask)
        if selected is None:
            class_text = text  # [T, P, D], shared by the batch
        else:
            cost = cost.gather(1, selected[:, :, None, None, None].expand(-1, -1, *cost.shape[2:]))
            class_text = text[selected]  # [B, pad_len, P, D]
        logits = self.aggregate(cost, image, class_text, early, late, mask)
        if selected is not None:
            full = logits.new_full((logits.shape[0], text.shape[0], *logits.shape[2:]), UNSELECTED_LOGIT)
            logits = full.scatter(1, selected[:, :, None, None].expand(-1, -1, *logits.shape[2:]), logits)
        return zero_padding(logits, masks_at(mask, OUTPUT_SCALE))

    def aggregate(self, cost: Tensor, image: Tensor, text: Tensor, early: Tensor, late: Tensor, mask: Tensor) -> Tensor:
        """``cost [B, T, P, H, W]``, ``image [B, D, H, W]``, ``text [T, P, D]`` shared by the batch or
        ``[B, T, P, D]`` (each image's selected classes), the two guidance maps -> logits ``[B, T, 4H, 4W]``."""
        batch, classes, templates, height, width = cost.shape
        flat = zero_padding(cost.reshape(batch * classes, templates, height, width), mask.repeat_interleave(classes, 0))
        embedded = self.cost_embed(flat).reshape(batch, classes, -1, height, width)
        embedded = embedded * mask[:, None, None].to(embedded.dtype)
        appearance = F.relu(self.appearance_guidance(image)) * mask[:, None].to(image.dtype)
        text_mean = F.normalize(F.normalize(text, dim=-1).mean(dim=-2), dim=-1)  # [(B,) T, D]
        text_guidance = F.relu(self.text_guidance(text_mean))
        fine_mask, finer_mask = masks_at(mask, 2), masks_at(mask, 4)
        guidance_early = F.relu(self.project_early(zero_padding(self.upsample_early(early), fine_mask)))
        guidance_late = F.relu(self.project_late(zero_padding(self.upsample_late(late), finer_mask)))
        guidance_early = zero_padding(guidance_early, fine_mask)
        guidance_late = zero_padding(guidance_late, finer_mask)
        for spatial, across in zip(self.spatial, self.classes):
            embedded = spatial(embedded, appearance, mask, self.class_chunk)
            if text_guidance.ndim == 2:
                embedded = across(embedded, text_guidance, mask)
            else:  # classes selected per image: each image with its own guidance
                embedded = torch.cat([across(embedded[i : i + 1], text_guidance[i], mask[i : i + 1])
                                      for i in range(batch)])
        return self.decode(embedded, guidance_early, guidance_late, fine_mask, finer_mask)

    def decode(self, embedded: Tensor, guidance_early: Tensor, guidance_late: Tensor, fine_mask: Tensor,
               finer_mask: Tensor) -> Tensor:
        """``[B, T, C, H, W]`` -> logits ``[B, T, 4H, 4W]``, ``class_chunk`` classes at a time."""
        batch, classes = embedded.shape[:2]
        outputs = []
        for start in range(0, classes, self.class_chunk):
            part = embedded[:, start : start + self.class_chunk]
            count = part.shape[1]
            x = part.reshape(batch * count, *part.shape[2:])
            x = self.decoder1(x, guidance_early, fine_mask.repeat_interleave(count, 0))
            x = self.decoder2(x, guidance_late, finer_mask.repeat_interleave(count, 0))
            outputs.append(self.predict(x).reshape(batch, count, *x.shape[-2:]))
        return torch.cat(outputs, dim=1)
