"""The tokenizer is read from the checkpoint as ``AutoProcessor`` reads it, and only from there."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from siglip2_dense import TextEncoder
from siglip2_dense.errors import CheckpointError

PROMPTS = ["this is a photo of a cat.", "this is a photo of the sky.", "a dog on the road by the sea"]


def test_a_processor_saved_by_transformers_5_tokenizes_as_auto_processor(tiny_naflex_text_dir, tmp_path):
    from transformers import AutoProcessor, AutoTokenizer, Siglip2ImageProcessor, Siglip2Processor

    directory = tmp_path / "processor-saved"
    shutil.copytree(tiny_naflex_text_dir, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (directory / name).unlink()
    Siglip2Processor(image_processor=Siglip2ImageProcessor(patch_size=4, max_num_patches=64),
                     tokenizer=tokenizer).save_pretrained(directory)
    assert (directory / "processor_config.json").is_file()
    encoder = TextEncoder.from_pretrained(str(directory), cache_dir=tmp_path / "cache")
    reference = AutoProcessor.from_pretrained(directory)(
        text=PROMPTS, padding="max_length", max_length=64, truncation=True, return_tensors="pt"
    )["input_ids"]
    ours = encoder.tokenize(PROMPTS)
    assert ours.shape == (3, 64)
    assert torch.equal(ours, reference)
    assert len(set(map(tuple, ours.tolist()))) == 3, "three different prompts must give three token sequences"


def test_a_checkpoint_without_a_tokenizer_is_refused(tiny_naflex_dir: Path, tmp_path):
    """transformers 5 builds an empty Siglip2Tokenizer here (5 special tokens), which reads every label as
    ``<unk>`` so all labels get one embedding; the loader refuses the checkpoint instead."""
    directory = tmp_path / "no-tokenizer"
    shutil.copytree(tiny_naflex_dir, directory)
    assert not any((directory / name).exists() for name in ("tokenizer.json", "tokenizer.model", "spiece.model"))
    with pytest.raises(CheckpointError, match=r"no-tokenizer' has no tokenizer: none of tokenizer\.json"):
        TextEncoder.from_pretrained(str(directory), cache_dir=tmp_path / "cache")
