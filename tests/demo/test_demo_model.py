"""Known-answer tests of the demo checkpoint (``assets/demo-siglip2``), trained on the synthetic world.

The figures are measured on held-out scenes, ``make_scene((SCENE_SEED_TAG, HELD_OUT_SEED, i), 128, 128)``,
whose seeds training never uses (training seeds are ``(SCENE_SEED_TAG, seed, i)`` with
``seed < HELD_OUT_SEED``). Everything goes through the public loaders a hub checkpoint takes:
``load_backbone``, ``TextEncoder.from_pretrained``, ``OpenVocabSegmenter.from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_CHECKPOINT

from siglip2_dense.data.synthetic import CLASS_NAMES
from siglip2_dense.demo.data import (
    HELD_OUT_SEED,
    class_fractions,
    held_out_scene_seed,
    patchify,
    training_scene_seed,
)
from siglip2_dense.demo.evaluation import held_out_scenes, open_vocab_miou, zero_shot_accuracy

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = DEMO_CHECKPOINT
EXAMPLES = REPO / "assets" / "examples"
NUM_HELD_OUT = 50
VARIANTS = ("plain", "sclip", "naclip")


@pytest.fixture(scope="module")
def scenes():
    return held_out_scenes(NUM_HELD_OUT, size=128)


@pytest.fixture(scope="module")
def segmenters(tmp_path_factory):
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    cache = tmp_path_factory.mktemp("text-cache")
    return {v: OpenVocabSegmenter.from_pretrained(str(CHECKPOINT), variant=v, cache_dir=cache) for v in VARIANTS}


# --- the checkpoint on disk ---------------------------------------------------------------------
def test_checkpoint_is_a_small_hub_style_folder():
    names = {p.name for p in CHECKPOINT.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
            "tokenizer_config.json", "training.json"} <= names
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names)
    assert sum(p.stat().st_size for p in CHECKPOINT.iterdir()) <= 10 * 2**20
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert config["model_type"] == "siglip2"
    processor = json.loads((CHECKPOINT / "preprocessor_config.json").read_text())
    assert processor["patch_size"] == config["vision_config"]["patch_size"] == 8
    assert processor["max_num_patches"] == 256


def test_tokenizer_loads_with_auto_tokenizer_and_pads_to_the_text_length_with_a_pad_token_last():
    from transformers import AutoTokenizer

    from siglip2_dense.demo.prompts import TEXT_LENGTH
    from siglip2_dense.demo.tokenizer import build_tokenizer, world_texts
    from siglip2_dense.text.encoder import TextEncoder

    tokenizer = AutoTokenizer.from_pretrained(str(CHECKPOINT))
    assert type(tokenizer).__name__ == "Siglip2Tokenizer"  # what AutoTokenizer builds for model_type siglip2
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert TEXT_LENGTH == config["text_config"]["max_position_embeddings"] == 32
    assert TextEncoder.from_pretrained(str(CHECKPOINT)).max_length == TEXT_LENGTH  # the encoder pads as training did
    texts = ["this is a photo of red circle", "Two blue STARS, and a yellow square."]
    ids = tokenizer(texts, padding="max_length", max_length=TEXT_LENGTH, truncation=True,
                    return_tensors="pt")["input_ids"]
    assert ids.shape == (2, TEXT_LENGTH)
    assert (ids[:, -1] == tokenizer.pad_token_id).all()
    pieces = tokenizer.convert_ids_to_tokens(ids[1, :10].tolist())
    assert pieces == ["two", "\u2581blue", "\u2581stars", ",", "\u2581and", "\u2581a", "\u2581yellow", "\u2581square",
                      ".", tokenizer.eos_token]
    assert (ids[1, 10:] == tokenizer.pad_token_id).all()
    assert ids[0, :8].tolist() == tokenizer("this is a photo of red circle")["input_ids"]
    for word in {w for text in world_texts() for w in text.lower().split()}:  # every world word is one token
        assert len(tokenizer(word)["input_ids"]) == 2, word
        assert len(tokenizer(f"a {word}")["input_ids"]) == 3, word
    assert tokenizer.unk_token_id not in tokenizer("a zebra")["input_ids"]  # unknown words fall back to letters
    assert build_tokenizer().get_vocab() == tokenizer.get_vocab()


def test_checkpoint_loads_through_every_public_loader(segmenters):
    from siglip2_dense import load_backbone
    from siglip2_dense.text.encoder import TextEncoder

    backbone = load_backbone(str(CHECKPOINT))
    assert backbone.is_naflex and backbone.patch_size == 8 and backbone.embed_dim == 128
    features = backbone(**backbone.preprocess([np.zeros((128, 128, 3), np.uint8)]))
    assert tuple(features.maps[0].shape) == (1, 128, 16, 16)
    text = TextEncoder.from_pretrained(str(CHECKPOINT))
    record = json.loads((CHECKPOINT / "training.json").read_text())
    assert text.logit_scale.item() == pytest.approx(record["logit_scale"], abs=1e-4)
    assert text.logit_bias.item() == pytest.approx(record["logit_bias"], abs=1e-4)
    # the SigLIP start (log 10, -10) has moved: the scalars were trained
    assert abs(text.logit_scale.item() - np.log(10)) > 0.05


# --- known answers on held-out scenes ----------------------------------------------------------
def test_zero_shot_classification_names_a_shape_in_the_scene(segmenters, scenes):
    accuracy = zero_shot_accuracy(segmenters["plain"], scenes)
    assert accuracy >= 90.0, f"zero-shot top-1 accuracy {accuracy:.1f}% < 90%"


def test_zero_shot_classification_is_not_a_constant_answer(segmenters, scenes):
    shapes = list(CLASS_NAMES[1:])
    probabilities = segmenters["plain"].classify([s.image for s in scenes], shapes)
    assert len(set(probabilities.argmax(1).tolist())) >= 12  # most of the 16 shapes come out on top somewhere


def test_open_vocabulary_segmentation_of_held_out_scenes(segmenters, scenes):
    """The issue's bar is the best variant; every variant's figure is printed. NACLIP drops the last
    block's residual and MLP, which this model's patch loss trained through: it is far below the others."""
    figures = {v: open_vocab_miou(segmenters[v], scenes)["mIoU"] for v in VARIANTS}
    print("open-vocabulary mIoU on held-out scenes:", {v: round(f, 1) for v, f in figures.items()})
    best = max(figures, key=figures.get)
    assert figures[best] >= 50.0, f"best variant {best}: mIoU {figures[best]:.1f} < 50 ({figures})"


def test_open_vocabulary_mask_follows_the_shape():
    """A held-out scene's own shapes: each label's mask overlaps that shape's true pixels most."""
    from siglip2_dense.data.synthetic import make_scene
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    segmenter = OpenVocabSegmenter.from_pretrained(str(CHECKPOINT))
    scene = make_scene(held_out_scene_seed(0), 128, 128)
    result = segmenter(scene.image, list(CLASS_NAMES))
    agreement = (result.label_map.numpy() == scene.mask).mean()
    assert agreement >= 0.8, f"pixel agreement {agreement:.2f}"


# --- seeds, data and preprocessing -------------------------------------------------------------
def test_held_out_and_training_seeds_never_meet():
    record = json.loads((CHECKPOINT / "training.json").read_text())
    seed, pool = record["recipe"]["seed"], record["recipe"]["pool_size"]
    assert 0 <= seed < HELD_OUT_SEED
    assert training_scene_seed(seed, 0) != held_out_scene_seed(0)
    assert {training_scene_seed(seed, i) for i in range(pool)}.isdisjoint(held_out_scene_seed(i) for i in range(1000))
    with pytest.raises(ValueError):
        training_scene_seed(HELD_OUT_SEED, 0)


def test_patchify_equals_the_naflex_processor():
    from transformers import Siglip2ImageProcessor

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    expected = Siglip2ImageProcessor(patch_size=8, max_num_patches=256)(images=list(images), return_tensors="pt")
    ours = patchify(torch.from_numpy(images).permute(0, 3, 1, 2), 8)
    torch.testing.assert_close(ours, expected["pixel_values"], rtol=0, atol=1e-6)


def test_class_fractions_count_pixels_per_patch():
    mask = torch.zeros(1, 16, 16, dtype=torch.uint8)
    mask[0, :8, :4] = 3  # top-left cell: half class 3
    mask[0, 8:, 8:] = 16  # bottom-right cell: all class 16
    fractions = class_fractions(mask, 2)
    assert fractions.shape == (1, 17, 2, 2)
    assert fractions[0, 3, 0, 0] == 0.5 and fractions[0, 0, 0, 0] == 0.5
    assert fractions[0, 16, 1, 1] == 1.0 and fractions[0, 0, 1, 1] == 0.0
    torch.testing.assert_close(fractions.sum(1), torch.ones(1, 2, 2))


def test_training_is_reproducible_from_its_seed(tmp_path):
    from safetensors.torch import load_file

    from siglip2_dense.demo.training import DemoRecipe, train_demo_model

    torch.set_num_threads(1)
    tiny = dict(steps=3, pool_size=16, batch_size=8, full_res_batch_size=4, full_res_every=2, captions_per_step=8,
                warmup_steps=1)
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        record = train_demo_model(DemoRecipe(seed=seed, **tiny), tmp_path / name, log=lambda _: None)
        assert all(np.isfinite(v) for v in record["final_losses"].values())
        runs[name] = load_file(str(tmp_path / name / "model.safetensors"))
    assert runs["a"].keys() == runs["b"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not torch.equal(runs["a"]["vision_model.head.probe"], runs["c"]["vision_model.head.probe"])


# --- slow: frozen probes on the demo backbone, through tools/train.py's training loop -------------
# DINOv2's linear-evaluation habit: the last four blocks concatenated, a grid of learning rates trained in
# one pass over cached features (four augmented views per scene), the best head reported.
PROBE_SCENES = 800  # written with seed 8: 600 training scenes, 200 evaluation scenes (index % 4 == 1)
PROBE = ["model.max_num_patches=256", "model.layers=4", "data.crop_size=[128,128]", "train.feature_cache=true",
         "data.train_views=4", "train.lr_grid=[1e-3,3e-3,1e-2,3e-2]", "train.iterations=600", "train.batch_size=16",
         "train.lr=1e-3", "train.warmup_iterations=50", "train.log_every=100", "train.val_every=600",
         "train.checkpoint_every=600", "train.device=cpu", "eval.mode=whole"]


def _probe(config_name: str, data_format: str, tmp_path: Path, extra: list[str]) -> dict:
    from siglip2_dense.config import load_config
    from siglip2_dense.data import write_synthetic
    from siglip2_dense.training.engine import train

    root = write_synthetic(data_format, tmp_path / "data", num=PROBE_SCENES, seed=8, size=(128, 128))
    args = [f"model.backbone={CHECKPOINT}", f"data.root={root}", f"train.output_dir={tmp_path / 'run'}", *PROBE,
            *extra]
    return train(load_config(REPO / "configs" / config_name, args))


@pytest.mark.slow
def test_frozen_linear_probe_segments_held_out_scenes(tmp_path):
    """Measured: mIoU 57.1 (lr 3e-2 best; 2000 iterations and lr up to 0.3 gave the same). The goal set for
    the demo model is 70: the frozen features do not get there yet, and this guards what they give."""
    result = _probe("synthetic_linear_tiny.yaml", "ade20k", tmp_path,
                    ["data.short_side=128", "data.scale_range=[1.0,1.0]"])
    print(f"demo backbone, frozen linear probe: mIoU {result['best']['value']:.1f}")
    assert result["best"]["metric"] == "mIoU"
    assert result["best"]["value"] >= 55.0


@pytest.mark.slow
def test_frozen_bins_depth_probe_on_held_out_scenes(tmp_path):
    """Measured: abs_rel 0.173 (lr 1e-2 best). The goal set for the demo model is 0.15; this guards what
    the frozen features give."""
    result = _probe("synthetic_bins_tiny.yaml", "nyu-bts", tmp_path, ["eval.depth_crop=null"])
    print(f"demo backbone, frozen bins depth probe: abs_rel {result['best']['value']:.3f}")
    assert result["best"]["metric"] == "abs_rel"
    assert result["best"]["value"] <= 0.19
