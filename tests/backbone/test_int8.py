"""quantize="int8": dynamic int8 linear layers for CPU inference, and what they cost in accuracy.

Known answers on the demo checkpoint's held-out scenes (zero-shot accuracy within 1 point, open-vocabulary
mIoU within 1.0 of float32), per-block cosine similarity >= 0.99 on a base-size tower with random weights,
int8 weights <= 0.3 of float32 in memory, and the requests it refuses.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO_CHECKPOINT, random_image

import siglip2_dense as sd
from siglip2_dense.errors import RequestError
from siglip2_dense.int8 import (
    quantizable_linear_names,
    quantize_linear_layers,
    quantized_as,
    tower_weight_bytes,
)

BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)
NUM_HELD_OUT = 100


def test_loader_swaps_the_block_and_head_linear_layers_and_keeps_the_embeddings(tiny_naflex_dir, rng):
    fp32 = sd.load_backbone(str(tiny_naflex_dir), layers=[0, -1])
    int8 = sd.load_backbone(str(tiny_naflex_dir), layers=[0, -1], quantize="int8")
    assert quantized_as(int8.vision_model) == "int8" and quantized_as(fp32.vision_model) is None
    assert quantizable_linear_names(int8.vision_model) == []  # none left in float32 outside the embeddings
    assert type(int8.vision_model.embeddings.patch_embedding) is torch.nn.Linear
    inputs = fp32.preprocess([random_image(rng, 40, 60), random_image(rng, 24, 24)])
    with torch.inference_mode():
        want, got = fp32(**inputs), int8(**inputs)
    for a, b in zip(want.maps, got.maps):
        assert F.cosine_similarity(a.flatten(1), b.flatten(1)).min() > 0.95
    assert F.cosine_similarity(want.pooled, got.pooled).min() > 0.95


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(quantize="int4"), ["'int4'", "int8"]),
        (dict(quantize="int8", freeze=False), ["frozen", "tuned"]),
        (dict(quantize="int8", tune_last_blocks=1), ["frozen", "tune_last_blocks"]),
        (dict(quantize="int8", dtype=torch.bfloat16), ["float32", "bfloat16"]),
    ],
)
def test_requests_int8_cannot_honour_are_refused_early(tiny_naflex_dir, kwargs, words):
    with pytest.raises(RequestError) as raised:
        sd.load_backbone(str(tiny_naflex_dir), **kwargs)
    assert all(word in str(raised.value) for word in words), str(raised.value)


def test_timm_backbones_refuse_int8():
    with pytest.raises(RequestError, match="timm:vit_tiny"):
        sd.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, quantize="int8")


def test_int8_text_tower_embeds_close_to_float32_and_caches_apart(tiny_naflex_text_dir, tmp_path):
    fp32 = sd.TextEncoder.from_pretrained(str(tiny_naflex_text_dir), cache_dir=tmp_path)
    int8 = sd.TextEncoder.from_pretrained(str(tiny_naflex_text_dir), cache_dir=tmp_path, quantize="int8")
    assert int8.quantized == "int8" and fp32.quantized is None
    labels = ["cat", "dog", "a red car"]
    assert fp32.cache_location(labels)[0] != int8.cache_location(labels)[0]
    want, got = fp32.encode(labels), int8.encode(labels)
    assert F.cosine_similarity(want, got).min() > 0.95


@pytest.fixture(scope="module")
def base_towers():
    """A base-size SigLIP2 NaFlex tower with random weights, as a Backbone in float32 and in int8."""
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    tower = Siglip2VisionModel(Siglip2VisionConfig(**BASE, num_patches=256)).eval()
    processor = Siglip2ImageProcessor(patch_size=16, max_num_patches=256)
    layers = list(range(BASE["num_hidden_layers"]))
    fp32 = sd.Backbone(tower, processor, layers=layers, norm=False)
    int8 = sd.Backbone(quantize_linear_layers(copy.deepcopy(tower), "int8"), processor, layers=layers, norm=False)
    return fp32, int8


def test_every_base_block_keeps_cosine_similarity_of_at_least_099(base_towers):
    fp32, int8 = base_towers
    images = [np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8) for i in range(2)]
    inputs = fp32.preprocess(images)
    with torch.inference_mode():
        want, got = fp32(**inputs), int8(**inputs)
    per_block = []
    for a, b in zip(want.maps, got.maps):  # [B, C, H, W]: one cosine per patch, the mean per block
        per_block.append(F.cosine_similarity(a, b, dim=1).mean().item())
    print("int8 per-block cosine similarity to float32:", [round(c, 4) for c in per_block],
          "lowest", round(min(per_block), 4))
    assert min(per_block) >= 0.99, per_block
    assert F.cosine_similarity(want.pooled, got.pooled).min().item() >= 0.99


def test_int8_base_tower_weights_take_at_most_03_of_float32(base_towers):
    fp32, int8 = base_towers
    ratio = tower_weight_bytes(int8.vision_model) / tower_weight_bytes(fp32.vision_model)
    print(f"int8 / float32 tower weight bytes: {ratio:.3f}")
    assert ratio <= 0.3


@pytest.fixture(scope="module")
def demo_segmenters(tmp_path_factory):
    cache = tmp_path_factory.mktemp("text-cache")
    return {q: sd.OpenVocabSegmenter.from_pretrained(str(DEMO_CHECKPOINT), cache_dir=cache, quantize=q)
            for q in (None, "int8")}


def test_int8_keeps_demo_zero_shot_accuracy_and_open_vocabulary_miou(demo_segmenters):
    from siglip2_dense.demo.evaluation import held_out_scenes, open_vocab_miou, zero_shot_accuracy

    scenes = held_out_scenes(NUM_HELD_OUT, size=128)
    accuracy = {q: zero_shot_accuracy(s, scenes) for q, s in demo_segmenters.items()}
    miou = {q: open_vocab_miou(s, scenes)["mIoU"] for q, s in demo_segmenters.items()}
    print(f"demo held-out ({NUM_HELD_OUT} scenes): zero-shot accuracy {accuracy}, open-vocabulary mIoU {miou}")
    assert accuracy[None] >= 90.0  # the float32 figure is the known answer this is measured against
    assert abs(accuracy["int8"] - accuracy[None]) <= 1.0
    assert abs(miou["int8"] - miou[None]) <= 1.0


def test_segment_tool_takes_quantize_int8(tmp_path):
    import runpy
    from pathlib import Path

    example = sorted((Path(DEMO_CHECKPOINT).parent / "examples").glob("*.png"))[0]
    main = runpy.run_path(str(Path(DEMO_CHECKPOINT).parents[1] / "tools" / "segment.py"))["main"]
    code = main([str(example), "--labels", "circle; square; background", "--model", str(DEMO_CHECKPOINT),
                 "--quantize", "int8", "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")])
    assert code == 0 and any((tmp_path / "out").iterdir())
