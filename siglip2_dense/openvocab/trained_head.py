"""A trained open-vocabulary head behind the segmenter's head interface.

:class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` asks its head for probabilities on the padded
grid, ``head(features, embeddings, label_index)``, and embeds labels through it when the head says how.
:class:`TrainedVocabularyHead` gives a saved :class:`~siglip2_dense.heads.cost_aggregation.CostAggregationHead`
that interface: labels embedded per template with the templates it was trained with
(:func:`~siglip2_dense.text.template_embeddings.template_embeddings`), sigmoid probabilities on its 4x grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.heads.cost_aggregation_blocks import masks_at
from siglip2_dense.text.encoder import LabelEmbeddings, TextEncoder
from siglip2_dense.text.template_embeddings import template_embeddings


class TrainedVocabularyHead(nn.Module):
    """``head`` (a trained head scored against text, e.g. ``CostAggregationHead``) for the segmenter.

    Attributes:
        output_scale: output cells per patch side (the segmenter scales grid sizes by it).
    """

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.output_scale = int(getattr(head, "output_scale", 1))
        self.templates = head.templates

    def encode_labels(self, text_encoder: TextEncoder, labels: Sequence[str]) -> LabelEmbeddings:
        """Labels -> ``[K, P, D]`` per-template embeddings with the head's training templates."""
        return template_embeddings(text_encoder, labels, self.templates)

    def forward(self, features: DenseFeatures, text_embeddings: Tensor, label_index: Tensor | None = None) -> Tensor:
        """``[B, K, sH, sW]`` float32 sigmoid probabilities (CAT-Seg's inference), zero at padding."""
        logits = self.head(features, text_embeddings)
        real = masks_at(features.mask.to(logits.device), self.output_scale)
        return torch.sigmoid(logits) * real[:, None].to(logits.dtype)

    def probabilities(self, scores: Tensor, label_index: Tensor | None = None) -> Tensor:
        """Already probabilities: the identity."""
        return scores
