"""What the demo model learns to name: the 17 classes, and each colour and shape word on its own.

The prompts are the 17 class names (``"background"``, ``"red circle"``, ...) followed by the four
colour words and the four shape words (25 in all). A patch's target for ``"red"`` is the share of
it covered by any red shape, for ``"circle"`` the share covered by any circle; an image shows
``"circle"`` when it shows any circle class. The single words give every shape four times the
examples of one colour-shape class, and let a user of the demo ask for ``"circle; star"`` as well
as for ``"red circle"``.
"""

from __future__ import annotations

from typing import Any

import torch

from siglip2_dense.data.synthetic import CLASS_NAMES, COLOURS, SHAPES, class_index
from siglip2_dense.demo.model import TEXT_LENGTH
from siglip2_dense.text.prompts import fill_templates, resolve_templates

PROMPT_NAMES = (*CLASS_NAMES, *COLOURS, *SHAPES)


def class_to_prompt_matrix() -> torch.Tensor:
    """``[K, P]`` float32 (K = 17 classes, P = 25 prompts): 1 where class k counts for prompt p."""
    matrix = torch.zeros(len(CLASS_NAMES), len(PROMPT_NAMES))
    matrix[:, : len(CLASS_NAMES)] = torch.eye(len(CLASS_NAMES))
    for colour in COLOURS:
        for shape in SHAPES:
            k = class_index(colour, shape)
            matrix[k, PROMPT_NAMES.index(colour)] = 1.0
            matrix[k, PROMPT_NAMES.index(shape)] = 1.0
    return matrix


def prompt_targets(class_shares: torch.Tensor) -> torch.Tensor:
    """Per-class shares ``[..., K]`` -> per-prompt shares ``[..., P]`` (a class's share counts for its
    own name, its colour and its shape)."""
    return class_shares @ class_to_prompt_matrix().to(class_shares.device, class_shares.dtype)


def prompt_presence(class_presence: torch.Tensor) -> torch.Tensor:
    """Per-class presence ``[B, K]`` bool -> per-prompt presence ``[B, P]`` bool."""
    return prompt_targets(class_presence.float()) > 0


def tokenize(tokenizer: Any, texts: list[str]) -> torch.Tensor:
    """``input_ids [N, TEXT_LENGTH]``: padded to the text tower's length with ``<pad>``, as
    :class:`~siglip2_dense.text.encoder.TextEncoder` does."""
    encoded = tokenizer(texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True, return_tensors="pt")
    return encoded["input_ids"]


def prompt_ids(tokenizer: Any) -> torch.Tensor:
    """``[T, P, TEXT_LENGTH]``: every prompt name in every template, canonicalised as the text encoder does;
    the single template first, then the 80 ImageNet templates (T = 81)."""
    templates = (*resolve_templates("single"), *resolve_templates("imagenet80"))
    prompts = [fill_templates(name, [template])[0] for template in templates for name in PROMPT_NAMES]
    return tokenize(tokenizer, prompts).reshape(len(templates), len(PROMPT_NAMES), TEXT_LENGTH)
