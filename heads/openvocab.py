"""Training-free open-vocabulary head: patch features -> per-label probabilities on the patch grid.

SigLIP's only bridge from image tokens to the text space is the MAP head (attention pooling
with a learned probe, then layernorm + MLP). A patch's own embedding in that space is the MAP
head applied to a sequence holding only that patch: the softmax over one key is 1, so

    f = out_proj(v_proj(x));  f = f + mlp(layernorm(f))

where ``x`` is the patch's token after the last block and ``post_layernorm``. Each embedding
is scored against L2-normalised text embeddings as SigLIP scores image-text pairs:
``sigmoid(cos * exp(logit_scale) + logit_bias)``.

The head reruns the tower's last block itself, so its input is the *input* of that block: a
backbone loaded with ``layers=[-2], norm=False`` (:data:`BACKBONE_KWARGS`). The variants of that
block (``plain``, ``sclip``, ``naclip``, ``clearclip``, ``value``, ``proxyclip``) are defined, each
with its formula and reference, in :mod:`siglip2_dense.heads.openvocab_attention`.

The MAP side: ``map_mlp`` keeps (True) or drops (False) the MAP head's ``f + mlp(layernorm(f))``
step, for every variant. Its default is True, except for ``value``: MaskCLIP's value path, the MAP
head's value and out projections alone, the choice TextRegion makes for SigLIP2
(avaxiao/TextRegion ``TextRegionSegmenter.py``, ``siglip_value_with_sam2_attn``: no MLP residual).
``proxyclip`` takes the attention weights from a second backbone's features, given to
:meth:`OpenVocabHead.forward` as ``proxy_features`` on the same patch grid.

Padding patches never act as keys; their outputs are zero probability.

The head borrows the vision tower's last block, final layernorm and MAP head; it owns no
parameters, only the two scalars.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.errors import RequestError
from siglip2_dense.heads.openvocab_attention import (
    PROXY_BETA,
    PROXY_GAMMA,
    VARIANTS,
    gaussian_grid_prior,
    proxy_attention_logits,
    run_last_block,
)
from siglip2_dense.text.encoder import max_over_synonyms

__all__ = [
    "BACKBONE_KWARGS", "VARIANTS", "OpenVocabHead", "default_map_mlp", "gaussian_grid_prior", "map_value_path",
    "probabilities_to_label_map",
]

BACKBONE_KWARGS = {"layers": [-2], "norm": False}


def default_map_mlp(variant: str) -> bool:
    """Whether ``variant`` keeps the MAP head's MLP step by default (all but ``value``)."""
    return variant != "value"


def probabilities_to_label_map(probabilities: Tensor, background_threshold: float | None = None) -> Tensor:
    """Arg-max over labels: ``[..., K, H, W]`` -> long ``[..., H, W]``.

    With ``background_threshold``, pixels whose best probability is below it get index ``K``
    (one past the last label).
    """
    best, label_map = probabilities.max(dim=-3)
    if background_threshold is not None:
        label_map = torch.where(best < background_threshold, torch.full_like(label_map, probabilities.shape[-3]), label_map)
    return label_map


def map_value_path(vision_model: nn.Module, tokens: Tensor, mlp: bool = True) -> Tensor:
    """Each token through ``vision_model``'s MAP head as the only token attended to: ``[..., C]`` -> ``[..., D]``.

    ``f = out_proj(v_proj(x))`` (the softmax over one key is 1); ``mlp`` adds the MAP head's
    ``f + mlp(layernorm(f))`` step.
    """
    head = vision_model.head
    attention = head.attention
    channels = attention.embed_dim
    if attention._qkv_same_embed_dim:
        weight = attention.in_proj_weight[2 * channels :]
    else:
        weight = attention.v_proj_weight
    bias = None if attention.in_proj_bias is None else attention.in_proj_bias[2 * channels :]
    embedded = attention.out_proj(F.linear(tokens, weight, bias))
    if not mlp:
        return embedded
    return embedded + head.mlp(head.layernorm(embedded))


class OpenVocabHead(nn.Module):
    """Per-label probabilities on the patch grid from the MAP head's own weights.

    Args:
        vision_model: the transformers ``Siglip2VisionModel`` / ``SiglipVisionModel`` (with its MAP head).
        logit_scale, logit_bias: the checkpoint's scalars (``TextEncoder.logit_scale`` / ``logit_bias``).
        variant: one of :data:`VARIANTS` (see :mod:`siglip2_dense.heads.openvocab_attention`).
        gaussian_std: NACLIP's neighbourhood width in patches (NACLIP's default 5).
        map_mlp: keep the MAP head's MLP step; None: :func:`default_map_mlp` of the variant.
        proxy_beta, proxy_gamma: ProxyCLIP's normalisation (its defaults 1.2 and 3.0).
    """

    learns_from_labels = False  # its weights are the tower's own: evaluated zero-shot, never trained

    def __init__(
        self,
        vision_model: nn.Module,
        logit_scale: float | Tensor,
        logit_bias: float | Tensor,
        variant: str = "plain",
        gaussian_std: float = 5.0,
        map_mlp: bool | None = None,
        proxy_beta: float = PROXY_BETA,
        proxy_gamma: float = PROXY_GAMMA,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise RequestError(f"variant={variant!r}: expected one of {VARIANTS}")
        if not getattr(vision_model, "use_head", True) or getattr(vision_model, "head", None) is None:
            raise RequestError("OpenVocabHead needs the vision tower's MAP head (vision_use_head=True)")
        if gaussian_std <= 0:
            raise RequestError(f"gaussian_std={gaussian_std}: expected a positive width in patches")
        self.variant = variant
        self.gaussian_std = float(gaussian_std)
        self.map_mlp = default_map_mlp(variant) if map_mlp is None else bool(map_mlp)
        self.proxy_beta, self.proxy_gamma = float(proxy_beta), float(proxy_gamma)
        self._borrowed = (vision_model,)  # a tuple: borrowed modules stay the backbone's, not this head's
        self.register_buffer("logit_scale", torch.as_tensor(logit_scale, dtype=torch.float32).reshape(()).clone())
        self.register_buffer("logit_bias", torch.as_tensor(logit_bias, dtype=torch.float32).reshape(()).clone())

    @classmethod
    def from_backbone(
        cls,
        backbone: nn.Module,
        logit_scale: float | Tensor,
        logit_bias: float | Tensor,
        variant: str = "plain",
        gaussian_std: float = 5.0,
        map_mlp: bool | None = None,
    ) -> OpenVocabHead:
        """A head for a :class:`~siglip2_dense.backbone.siglip.Backbone` loaded with :data:`BACKBONE_KWARGS`."""
        expected = [backbone.num_blocks - 2]
        if list(backbone.layers) != expected or backbone.norm:
            raise RequestError(
                f"OpenVocabHead reruns the last block and needs its input: load the backbone with "
                f"layers=[-2], norm=False (got layers={list(backbone.layers)}, norm={backbone.norm})"
            )
        return cls(backbone.vision_model, logit_scale, logit_bias, variant=variant, gaussian_std=gaussian_std,
                   map_mlp=map_mlp)

    @property
    def vision_model(self) -> nn.Module:
        return self._borrowed[0]

    # --- the last block ---------------------------------------------------------------------
    def last_block(
        self,
        tokens: Tensor,
        token_mask: Tensor,
        grid: tuple[int, int],
        variant: str | None = None,
        proxy_features: Tensor | None = None,
    ) -> Tensor:
        """Run the tower's last block (as ``variant``) and its final layernorm.

        Args:
            tokens: ``[B, N, C]`` input of the last block, ``N = H * W`` row-major grid cells.
            token_mask: ``[B, N]`` bool, True for real patches.
            grid: ``(H, W)``.
            proxy_features: ``proxyclip`` only: ``[B, C', H, W]`` the proxy backbone's patch features.

        Returns:
            ``[B, N, C]`` after ``post_layernorm`` (rows of padding cells are meaningless).
        """
        variant = self.variant if variant is None else variant
        proxy_logits = None
        if variant == "proxyclip":
            if proxy_features is None:
                raise RequestError("variant='proxyclip' needs proxy_features [B, C', H, W] on the patch grid")
            if tuple(proxy_features.shape[-2:]) != tuple(grid) or proxy_features.shape[0] != tokens.shape[0]:
                raise RequestError(f"proxy_features {tuple(proxy_features.shape)} must be [B={tokens.shape[0]}, "
                                   f"C', {grid[0]}, {grid[1]}], the patch grid")
            proxy = proxy_features.flatten(2).transpose(1, 2).to(tokens.device)
            proxy_logits = proxy_attention_logits(proxy, token_mask, self.proxy_beta, self.proxy_gamma)
        out = run_last_block(self.vision_model.encoder.layers[-1], tokens, token_mask, grid, variant,
                             gaussian_std=self.gaussian_std, proxy_logits=proxy_logits)
        return self.vision_model.post_layernorm(out)

    def _tokens(self, features: DenseFeatures) -> tuple[Tensor, Tensor, tuple[int, int]]:
        grid_map = features.maps[0]
        if grid_map.ndim != 4:
            raise RequestError(f"OpenVocabHead expects maps[0] [B, C, H, W], got {tuple(grid_map.shape)}")
        batch, channels, height, width = grid_map.shape
        tokens = grid_map.flatten(2).transpose(1, 2)
        return tokens, features.mask.reshape(batch, height * width).to(tokens.device), (height, width)

    # --- into the joint space ----------------------------------------------------------------
    def map_value_path(self, tokens: Tensor, mlp: bool | None = None) -> Tensor:
        """Each token through the MAP head as the only token attended to: ``[..., C]`` -> ``[..., D]``.

        ``mlp`` (default: the head's ``map_mlp``) adds the MAP head's ``mlp(layernorm(f))`` step.
        """
        return map_value_path(self.vision_model, tokens, self.map_mlp if mlp is None else mlp)

    def patch_embeddings(self, features: DenseFeatures, proxy_features: Tensor | None = None) -> Tensor:
        """Per-patch embeddings in the joint space: ``[B, D, H, W]`` (not normalised; zero at padding)."""
        tokens, token_mask, (height, width) = self._tokens(features)
        final = self.last_block(tokens, token_mask, (height, width), proxy_features=proxy_features)
        embedded = self.map_value_path(final)
        embedded = embedded * token_mask[..., None].to(embedded.dtype)
        return embedded.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)

    def pooled_embedding(self, features: DenseFeatures) -> Tensor:
        """The image embedding ``[B, D]``: the MAP head over the plain last block's real tokens.

        Equals transformers' ``get_image_features(...).pooler_output``.
        """
        tokens, token_mask, grid = self._tokens(features)
        final = self.last_block(tokens, token_mask, grid, variant="plain")
        head = self.vision_model.head
        probe = head.probe.expand(final.shape[0], -1, -1)
        pooled = head.attention(probe, final, final, key_padding_mask=~token_mask, need_weights=False)[0]
        pooled = pooled + head.mlp(head.layernorm(pooled))
        return pooled[:, 0]

    def probabilities(self, scores: Tensor, label_index: Tensor | None = None) -> Tensor:
        """What :meth:`forward` returns is already per-label probabilities: the identity
        (the CLIP head turns its cosines into probabilities here, after windows and PAMR)."""
        return scores

    # --- scores -------------------------------------------------------------------------------
    def similarity_logits(self, image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        """``cos * exp(logit_scale) + logit_bias``: ``[B, D, ...]`` x ``[S, D]`` -> ``[B, S, ...]`` float32."""
        image = F.normalize(image_embeddings.float(), dim=1)
        text = F.normalize(text_embeddings.float().to(image.device), dim=-1)
        cosine = torch.einsum("bd...,sd->bs...", image, text)
        return cosine * self.logit_scale.exp() + self.logit_bias

    def forward(
        self,
        features: DenseFeatures,
        text_embeddings: Tensor,
        label_index: Tensor | None = None,
        proxy_features: Tensor | None = None,
    ) -> Tensor:
        """Per-label probabilities on the patch grid.

        Args:
            features: the backbone's output (``layers=[-2], norm=False``): ``maps[0] [B, C, H, W]``,
                ``mask [B, H, W]``.
            text_embeddings: ``[S, D]`` (normalised here if they are not).
            label_index: ``[S]`` long, the label of each row (synonyms); the label's score is the
                maximum over its rows. None: one row per label.
            proxy_features: ``proxyclip`` only: ``[B, C', H, W]`` on the same grid.

        Returns:
            ``[B, K, H, W]`` float32 sigmoid probabilities, zero at padding cells.
        """
        logits = self.similarity_logits(self.patch_embeddings(features, proxy_features), text_embeddings)
        if label_index is not None:
            logits = max_over_synonyms(logits, label_index, int(label_index.max()) + 1, dim=1)
        probabilities = torch.sigmoid(logits)
        return probabilities * features.mask[:, None].to(probabilities.device, probabilities.dtype)
