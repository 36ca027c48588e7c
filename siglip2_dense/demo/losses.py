"""The demo model's three sigmoid losses, all scored as SigLIP scores: ``cos * exp(scale) + bias``.

- :func:`pairwise_sigmoid_loss`: SigLIP's loss (Zhai et al. 2023) of a batch of images against their
  captions, every image-caption pair a binary problem, positive when the captions are equal; the
  same loss between two template draws of the class prompts (positive for the same class) keeps
  the class prompts apart from the first step, when the text tower, pooling a pad token, would
  otherwise map "red circle" and "red square" to one point until the vision tower has learnt
  shapes (and the vision tower cannot learn shapes against equal prompts).
- :func:`presence_loss`: each image against every prompt (:mod:`siglip2_dense.demo.prompts`),
  positive for each one present (multi-positive; what zero-shot classification asks of the pooled
  embedding).
- :func:`patch_loss`: each patch's own embedding (the MAP head's value path, exactly what the
  training-free open-vocabulary head scores) against every prompt, the soft target being the
  prompt's share of the patch; patches are weighted against the background's majority
  (:func:`class_balanced_weights`).

Each loss sums the binary terms over the candidates and averages over the rows, as SigLIP does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def siglip_logits(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor) -> torch.Tensor:
    """``[..., D]`` x ``[M, D]`` -> ``[..., M]``: ``cos * exp(logit_scale) + logit_bias``."""
    return F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T * logit_scale.exp() + logit_bias


def pairwise_sigmoid_loss(
    x: torch.Tensor,
    y: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """SigLIP's sigmoid loss between two aligned sets of embeddings.

    Args:
        x: ``[B, D]`` (e.g. pooled image embeddings); y: ``[M, D]`` (e.g. their captions, in order).
        positives: ``[B, M]`` bool, True where pair (i, j) matches (e.g. equal captions, the diagonal included).
        logit_scale, logit_bias: ``[1]`` the model's scalars.
    """
    logits = siglip_logits(x, y, logit_scale, logit_bias)
    return F.binary_cross_entropy_with_logits(logits, positives.float(), reduction="sum") / logits.shape[0]


def presence_loss(
    image_embeddings: torch.Tensor,
    class_embeddings: torch.Tensor,
    presence: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """Multi-positive sigmoid loss of images against prompts.

    Args:
        image_embeddings: ``[B, D]``; class_embeddings: ``[P, D]``; presence: ``[B, P]`` bool.
    """
    logits = siglip_logits(image_embeddings, class_embeddings, logit_scale, logit_bias)
    return F.binary_cross_entropy_with_logits(logits, presence.float(), reduction="sum") / logits.shape[0]


def class_balanced_weights(class_shares: torch.Tensor, balance_power: float = 0.5) -> torch.Tensor:
    """Per-patch weights against the background's majority: ``n_c ** -balance_power``, normalised to mean 1.

    ``n_c`` is the number of patches in the batch whose majority class is the patch's own (0: no
    balancing; 1: each class present weighs the same).

    Args:
        class_shares: ``[B, N, K]`` each class's share of each patch.

    Returns:
        ``[B, N]`` float32.
    """
    majority = class_shares.argmax(-1)
    counts = torch.bincount(majority.flatten(), minlength=class_shares.shape[-1]).float()
    weights = counts[majority].pow(-balance_power)
    return weights / weights.mean()


def patch_loss(
    patch_embeddings: torch.Tensor,
    prompt_embeddings: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor,
) -> torch.Tensor:
    """Soft-target sigmoid loss of every patch against every prompt, weighted per patch.

    Args:
        patch_embeddings: ``[B, N, D]``; prompt_embeddings: ``[P, D]``.
        targets: ``[B, N, P]`` each prompt's share of each patch (in [0, 1]).
        weights: ``[B, N]`` per-patch weights (:func:`class_balanced_weights`).
    """
    logits = siglip_logits(patch_embeddings, prompt_embeddings, logit_scale, logit_bias)
    terms = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(-1)
    return (terms * weights).mean()
