"""The image processor is read from the checkpoint as transformers' auto classes read it.

transformers 5's ``Siglip2Processor.save_pretrained`` writes ``processor_config.json`` (the image
settings nested under ``image_processor``), older checkpoints ``preprocessor_config.json``. Whatever
the checkpoint holds, ``Backbone.preprocess`` must give exactly the tensors of
``AutoImageProcessor.from_pretrained(checkpoint)``; the tower's defaults apply only when neither
file exists.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import TINY_TEXT, TINY_VISION, build_tiny_tokenizer, random_image

import siglip2_dense as sd
from siglip2_dense.errors import CheckpointError

# The vision config's own patch count (what a loader falls back to) differs from the processor's budget.
CONFIG_PATCHES = 16
PROCESSOR_PATCHES = 96
# A 2:3 image: 96 patches of 4 px give an 8 x 12 grid, 16 patches a 3 x 5 one.
IMAGE_HW = (40, 60)
# CLIP's normalisation (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD), unlike SigLIP's default 0.5.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def naflex_model_dir(directory: Path) -> Path:
    """A full Siglip2Model whose vision config says ``num_patches=16``, with a tokenizer and no image settings."""
    from transformers import Siglip2Config, Siglip2Model

    torch.manual_seed(0)
    config = Siglip2Config(text_config=dict(TINY_TEXT), vision_config=dict(TINY_VISION, num_patches=CONFIG_PATCHES))
    Siglip2Model(config).eval().save_pretrained(directory)
    return build_tiny_tokenizer(directory)


def fixres_model_dir(directory: Path) -> Path:
    """A full SiglipModel trained at 32 px, with a tokenizer and no image settings."""
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    SiglipModel(SiglipConfig(text_config=dict(TINY_TEXT), vision_config=dict(TINY_VISION, image_size=32))).save_pretrained(
        directory
    )
    return build_tiny_tokenizer(directory)


def save_as_processor(directory: Path, image_processor) -> None:
    """What transformers 5 writes for ``<Model>Processor(image_processor, tokenizer).save_pretrained``."""
    from transformers import AutoTokenizer, Siglip2ImageProcessor, Siglip2Processor, SiglipProcessor

    processor_class = Siglip2Processor if isinstance(image_processor, Siglip2ImageProcessor) else SiglipProcessor
    processor_class(image_processor=image_processor, tokenizer=AutoTokenizer.from_pretrained(directory)).save_pretrained(
        directory
    )


def naflex_processor(max_num_patches: int = PROCESSOR_PATCHES):
    from transformers import Siglip2ImageProcessor

    return Siglip2ImageProcessor(patch_size=4, max_num_patches=max_num_patches)


def assert_naflex_inputs_equal_auto(directory: Path, image) -> list[list[int]]:
    """``preprocess`` == ``AutoImageProcessor.from_pretrained(directory)`` exactly; returns the grid."""
    from transformers import AutoImageProcessor

    ours = sd.load_backbone(str(directory)).preprocess([image])
    reference = AutoImageProcessor.from_pretrained(directory)(images=[image], return_tensors="pt")
    grid = ours["spatial_shapes"].tolist()
    assert grid == reference["spatial_shapes"].tolist()
    used = grid[0][0] * grid[0][1]
    assert torch.equal(ours["pixel_values"], reference["pixel_values"][:, :used])
    assert torch.equal(ours["pixel_attention_mask"], reference["pixel_attention_mask"][:, :used].long())
    assert not reference["pixel_attention_mask"][:, used:].any()
    return grid


def test_processor_config_written_by_transformers_5_is_honoured(tmp_path, rng):
    directory = naflex_model_dir(tmp_path / "naflex")
    save_as_processor(directory, naflex_processor())
    assert (directory / "processor_config.json").is_file()
    assert not (directory / "preprocessor_config.json").exists()
    # Before: no preprocessor_config.json -> vision_config.num_patches = 16 -> a 3 x 5 grid.
    assert assert_naflex_inputs_equal_auto(directory, random_image(rng, *IMAGE_HW)) == [[8, 12]]


def test_legacy_preprocessor_config_is_honoured(tmp_path, rng):
    directory = naflex_model_dir(tmp_path / "naflex")
    naflex_processor().save_pretrained(directory)
    assert not (directory / "processor_config.json").exists()
    assert assert_naflex_inputs_equal_auto(directory, random_image(rng, *IMAGE_HW)) == [[8, 12]]


def test_the_processors_own_file_wins_over_the_legacy_one(tmp_path, rng):
    directory = naflex_model_dir(tmp_path / "naflex")
    naflex_processor(max_num_patches=24).save_pretrained(directory)
    save_as_processor(directory, naflex_processor(max_num_patches=PROCESSOR_PATCHES))
    assert assert_naflex_inputs_equal_auto(directory, random_image(rng, *IMAGE_HW)) == [[8, 12]]


def test_defaults_only_when_neither_file_exists(tmp_path, rng, caplog):
    directory = naflex_model_dir(tmp_path / "naflex")
    with caplog.at_level(logging.WARNING, logger="siglip2_dense.towers"):
        backbone = sd.load_backbone(str(directory))
    assert "neither processor_config.json nor preprocessor_config.json" in caplog.text
    assert backbone.image_processor.max_num_patches == CONFIG_PATCHES
    assert backbone.preprocess([random_image(rng, *IMAGE_HW)])["spatial_shapes"].tolist() == [[3, 5]]


def test_fixres_processor_config_is_honoured(tmp_path, rng):
    from transformers import AutoImageProcessor, SiglipImageProcessor

    directory = fixres_model_dir(tmp_path / "fixres")
    save_as_processor(directory, SiglipImageProcessor(size={"height": 48, "width": 48}, image_mean=CLIP_MEAN,
                                                      image_std=CLIP_STD, resample=3))
    assert not (directory / "preprocessor_config.json").exists()
    image = random_image(rng, 37, 53)
    ours = sd.load_backbone(str(directory)).preprocess([image], size=48)["pixel_values"]
    reference = AutoImageProcessor.from_pretrained(directory)(images=[image], return_tensors="pt")["pixel_values"]
    assert reference.shape == (1, 3, 48, 48)
    # Before: SiglipImageProcessor's defaults (mean = std = 0.5): every value differs.
    assert torch.equal(ours, reference)


def test_an_image_processor_of_another_kind_is_refused(tmp_path):
    from transformers import CLIPImageProcessor

    directory = naflex_model_dir(tmp_path / "naflex")
    CLIPImageProcessor().save_pretrained(directory)
    with pytest.raises(CheckpointError, match=r"image processor of .* is a CLIPImageProcessor.*Siglip2ImageProcessor"):
        sd.load_backbone(str(directory))
