"""Shared fixtures: tiny SigLIP (FixRes) and SigLIP2 (NaFlex) checkpoints on disk.

Each checkpoint is built from the real transformers config classes with random weights, saved
with ``save_pretrained`` (safetensors) beside its image-processor config, and loaded by the tests
through the same public loaders a hub checkpoint takes. Built once per test session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

TINY_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                   patch_size=4)
TINY_TEXT = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, max_position_embeddings=64, projection_size=32,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2)


def build_tiny_naflex(directory: Path, seed: int = 0) -> Path:
    """A full ``Siglip2Model`` (vision + text towers), patch 4, at most 64 patches."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    torch.manual_seed(seed)
    config = Siglip2Config(
        text_config=dict(TINY_TEXT),
        vision_config=dict(TINY_VISION, num_patches=64, num_channels=3),
    )
    model = Siglip2Model(config).eval()
    model.save_pretrained(directory)
    Siglip2ImageProcessor(patch_size=4, max_num_patches=64).save_pretrained(directory)
    return directory


def build_tiny_fixres(directory: Path, seed: int = 0, vision_only: bool = False) -> Path:
    """A ``SiglipModel`` (or a ``SiglipVisionModel`` alone), 32x32 input, patch 4."""
    from transformers import (
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(seed)
    vision = dict(TINY_VISION, image_size=32)
    if vision_only:
        model = SiglipVisionModel(SiglipVisionConfig(**vision)).eval()
    else:
        model = SiglipModel(SiglipConfig(text_config=dict(TINY_TEXT), vision_config=vision)).eval()
    model.save_pretrained(directory)
    SiglipImageProcessor(size={"height": 32, "width": 32}, resample=2, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3).save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_naflex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_naflex(tmp_path_factory.mktemp("tiny-siglip2-naflex"))


@pytest.fixture(scope="session")
def tiny_fixres_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_fixres(tmp_path_factory.mktemp("tiny-siglip-fixres"))


@pytest.fixture(scope="session")
def tiny_fixres_vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_fixres(tmp_path_factory.mktemp("tiny-siglip-vision"), seed=1, vision_only=True)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def random_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image of uniform noise."""
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
