"""Shared fixtures: tiny SigLIP (FixRes) and SigLIP2 (NaFlex) checkpoints on disk.

Each checkpoint is built from the real transformers config classes with random weights, saved
with ``save_pretrained`` (safetensors) beside its image-processor config, and loaded by the tests
through the same public loaders a hub checkpoint takes. Built once per test session.
``DEMO_CHECKPOINT`` is the trained demo model the repository ships (``assets/demo-siglip2``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from siglip2_dense.backbone.features import DenseFeatures, grid_mask

torch.set_num_threads(1)

DEMO_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "demo-siglip2"

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


# --- open vocabulary: a tiny SigLIP2-style tokenizer and a checkpoint that can read text ------------

TINY_TOKENIZER_WORDS = (
    "this is a photo of the an bad good cat dog sky person people car tree wall building road grass "
    "water house sea mountain floor table chair window door"
).split()


def build_tiny_tokenizer(directory: Path, words: tuple[str, ...] = tuple(TINY_TOKENIZER_WORDS),
                         vocab_size: int = 96) -> Path:
    """A SigLIP2-style (Gemma layout) BPE tokenizer trained offline on ``words``, saved into ``directory``.

    Special tokens as ``Siglip2Tokenizer`` numbers them (``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2,
    ``<unk>`` 3, ``<mask>`` 4); lowercase, spaces as ``▁``, ``<eos>`` appended. Saved with
    ``save_pretrained`` so ``AutoTokenizer.from_pretrained(directory)`` loads it like a hub tokenizer
    (transformers 5 rebuilds a ``siglip2`` checkpoint's tokenizer as ``Siglip2Tokenizer`` from the
    BPE vocabulary and merges in ``tokenizer.json``).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern="▁", behavior="merged_with_next")
    corpus = [f" {word}" for word in words] * 3 + [f"this is a photo of {word}" for word in words]
    tokenizer.train_from_iterator(
        corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False)
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous")
    tokenizer.post_processor = processors.TemplateProcessing(single="$A <eos>", special_tokens=[("<eos>", 1)])
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
        unk_token="<unk>", mask_token="<mask>",
    )
    wrapped.save_pretrained(directory)
    return directory


def build_tiny_naflex_with_text(source: Path, directory: Path, seed: int = 0) -> Path:
    """A copy of a tiny NaFlex checkpoint made fit for text tests.

    Zero-initialised tensors (biases, ``logit_scale``, ``logit_bias``) get non-zero values, so a
    missing bias or scalar changes results; ``logit_scale = log(10)``, ``logit_bias = -2``; the
    tiny tokenizer is added.
    """
    import math
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, directory, dirs_exist_ok=True)
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(tensor.any()):
            state[name] = 0.05 * torch.randn(tensor.shape, generator=generator)
    state["logit_scale"] = torch.tensor([math.log(10.0)])
    state["logit_bias"] = torch.tensor([-2.0])
    save_file(state, str(weights), metadata={"format": "pt"})
    return build_tiny_tokenizer(directory)


@pytest.fixture(scope="session")
def tiny_naflex_text_dir(tiny_naflex_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_naflex_with_text(tiny_naflex_dir, tmp_path_factory.mktemp("tiny-siglip2-naflex-text"))


def is_missing(value: object) -> bool:
    """A metric with nothing to average: NaN in memory, ``null`` once written as JSON."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def assert_close_with_missing(got: list, want: list, rel: float, what: str = "") -> None:
    """``got == want`` elementwise within ``rel``, and NaN / ``None`` at exactly the same places.

    pytest >= 9 refuses ``approx`` on ``None`` or strings, so missing entries are compared by
    position and the others with ``approx`` (a missing entry on one side only fails).
    """
    assert len(got) == len(want), f"{what}: {len(got)} values, expected {len(want)}"
    got_missing = [i for i, v in enumerate(got) if is_missing(v)]
    want_missing = [i for i, v in enumerate(want) if is_missing(v)]
    assert got_missing == want_missing, f"{what}: missing at {got_missing}, expected {want_missing}"
    present = [i for i in range(len(want)) if i not in want_missing]
    assert [got[i] for i in present] == pytest.approx([want[i] for i in present], rel=rel), what


def build_four_block_checkpoint(directory: Path, naflex: bool, hidden_size: int = TINY_VISION["hidden_size"]) -> Path:
    """A vision-only tower with four blocks (DPT fuses four layers), saved like a hub checkpoint."""
    from transformers import (
        Siglip2ImageProcessor,
        Siglip2VisionConfig,
        Siglip2VisionModel,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(1)
    vision = dict(TINY_VISION, num_hidden_layers=4, hidden_size=hidden_size)
    if naflex:
        Siglip2VisionModel(Siglip2VisionConfig(**vision, num_patches=64)).eval().save_pretrained(directory)
        Siglip2ImageProcessor(patch_size=4, max_num_patches=64).save_pretrained(directory)
    else:
        SiglipVisionModel(SiglipVisionConfig(**vision, image_size=32)).eval().save_pretrained(directory)
        SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


def synthetic_features(grid_sizes: list[list[int]], height: int, width: int, seed: int, padding_value: float = 0.0,
                       channels: int = 8) -> DenseFeatures:
    """Four random maps on a padded grid, the padding filled with ``padding_value`` noise (0 = zeros)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(grid_sizes)
    mask = grid_mask(sizes, height, width)
    maps = []
    for _ in range(4):
        real = torch.randn(len(grid_sizes), channels, height, width, generator=generator)
        noise = padding_value * torch.randn(len(grid_sizes), channels, height, width, generator=generator)
        maps.append(torch.where(mask[:, None], real, noise))
    pooled = torch.randn(len(grid_sizes), channels, generator=generator)
    return DenseFeatures(maps=maps, mask=mask, grid_sizes=sizes, pooled=pooled)
