"""The demo checkpoint's architecture: a small NaFlex ``Siglip2Model`` built from transformers' classes.

Sizes (:data:`DEMO_ARCHITECTURE`): patch 8, a 16x16 position table (``num_patches=256``: a 128x128
image at its native resolution; NaFlex resizes the table to any other grid), width 128 in both
towers, 4 heads, MLP 512, 4 vision blocks and 2 text blocks, text of 32 tokens (the longest
caption of the world is about 20; SigLIP's 64 would double the text tower's cost for padding).
About 1.5M parameters, 6 MB in float32.

A freshly constructed ``Siglip2Model`` starts with ``logit_scale = logit_bias = 0``; from that
start the sigmoid loss pushes every pair's logit down at once and the text embeddings collapse
to one direction. :func:`build_demo_model` sets SigLIP's initialisation instead (Zhai et al.
2023): ``logit_scale = log 10``, ``logit_bias = -10``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

DEMO_ARCHITECTURE: dict[str, dict[str, Any]] = {
    "vision": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                   patch_size=8, num_patches=256, num_channels=3),
    "text": dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=32, projection_size=128),
}
TEXT_LENGTH = DEMO_ARCHITECTURE["text"]["max_position_embeddings"]  # every text is padded to it
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)
SIGLIP_INIT_LOGIT_BIAS = -10.0


def build_demo_model(
    vocab_size: int, pad_token_id: int, eos_token_id: int, seed: int, architecture: dict | None = None
):
    """A randomly initialised ``Siglip2Model`` with SigLIP's logit scale and bias.

    Args:
        vocab_size, pad_token_id, eos_token_id: the tokenizer's (:mod:`siglip2_dense.demo.tokenizer`).
        seed: seeds ``torch`` before the weights are drawn.
        architecture: ``{"vision": {...}, "text": {...}}`` config overrides; default :data:`DEMO_ARCHITECTURE`.
    """
    from transformers import Siglip2Config, Siglip2Model

    architecture = DEMO_ARCHITECTURE if architecture is None else architecture
    torch.manual_seed(seed)
    text = dict(architecture["text"], vocab_size=vocab_size, pad_token_id=pad_token_id,
                eos_token_id=eos_token_id, bos_token_id=None)
    config = Siglip2Config(text_config=text, vision_config=dict(architecture["vision"]))
    model = Siglip2Model(config)
    with torch.no_grad():
        model.logit_scale.fill_(SIGLIP_INIT_LOGIT_SCALE)
        model.logit_bias.fill_(SIGLIP_INIT_LOGIT_BIAS)
    return model

