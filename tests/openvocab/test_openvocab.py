"""OpenVocabHead and OpenVocabSegmenter: parity with transformers' MAP head and zero-shot scores,
the SCLIP / NACLIP last-block variants against direct reference computations, result shapes,
RLE round trips, label rules and the command-line tool."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image
from PIL import Image

from siglip2_dense import OpenVocabSegmenter, load_backbone
from siglip2_dense.backbone.naflex_batching import naflex_grid_size
from siglip2_dense.errors import RequestError
from siglip2_dense.heads.openvocab import BACKBONE_KWARGS, OpenVocabHead, gaussian_grid_prior

REPO = Path(__file__).resolve().parents[2]
LABELS = ["cat", "dog, puppy", "sky"]


@pytest.fixture(scope="module")
def segmenter(tiny_naflex_text_dir, tmp_path_factory) -> OpenVocabSegmenter:
    cache = tmp_path_factory.mktemp("openvocab-cache")
    return OpenVocabSegmenter.from_pretrained(str(tiny_naflex_text_dir), cache_dir=cache)


@pytest.fixture(scope="module")
def reference_model(tiny_naflex_text_dir):
    from transformers import Siglip2Model

    return Siglip2Model.from_pretrained(tiny_naflex_text_dir).eval()


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [random_image(rng, 30, 45), random_image(rng, 41, 19)]


@pytest.fixture(scope="module")
def batch(segmenter, images):
    """Preprocessed inputs and the backbone's features (input of the last block) for two images."""
    inputs = segmenter.backbone.preprocess(images)
    with torch.no_grad():
        return inputs, segmenter.backbone(**inputs)


def head_variant(segmenter, variant: str) -> OpenVocabHead:
    text = segmenter.text_encoder
    return OpenVocabHead.from_backbone(segmenter.backbone, text.logit_scale, text.logit_bias, variant=variant)


# --- the head against transformers ------------------------------------------------------------------

def test_plain_last_block_equals_the_towers_last_layer(segmenter, tiny_naflex_text_dir, images, batch):
    inputs, features = batch
    full = load_backbone(str(tiny_naflex_text_dir), layers=1, norm=True)
    with torch.no_grad():
        expected = full(**inputs).maps[0].flatten(2).transpose(1, 2)
        tokens, mask, grid = segmenter.head._tokens(features)
        got = segmenter.head.last_block(tokens, mask, grid)
    assert ((got - expected).abs() * mask[..., None]).max() <= 1e-5
    assert mask.sum() < mask.numel()  # the batch has padding cells


def test_patch_embedding_is_the_map_head_on_that_patch_alone(segmenter, tiny_naflex_text_dir, batch):
    inputs, features = batch
    full = load_backbone(str(tiny_naflex_text_dir), layers=1, norm=True)
    map_head = full.vision_model.head
    with torch.no_grad():
        final = full(**inputs).maps[0]
        embeddings = segmenter.head.patch_embeddings(features)
        for b in range(final.shape[0]):
            height, width = features.grid_sizes[b].tolist()
            patches = final[b, :, :height, :width].flatten(1).T  # [P, C]
            alone = map_head(patches[:, None, :])  # each patch as a one-token sequence
            ours = embeddings[b, :, :height, :width].flatten(1).T
            assert (alone - ours).abs().max() <= 1e-5
            assert embeddings[b, :, height:, :].abs().sum() == 0 and embeddings[b, :, :, width:].abs().sum() == 0


def test_pooled_embedding_equals_get_image_features(segmenter, reference_model, batch):
    inputs, features = batch
    with torch.no_grad():
        expected = reference_model.get_image_features(**inputs).pooler_output
        got = segmenter.head.pooled_embedding(features)
    assert (got - expected).abs().max() <= 1e-5


def test_zero_shot_classification_equals_transformers(segmenter, reference_model, tiny_naflex_text_dir, images):
    from transformers import AutoTokenizer

    probabilities = segmenter.classify(images, ["cat", "dog", "sky"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_naflex_text_dir)
    prompts = [f"this is a photo of {label}" for label in ["cat", "dog", "sky"]]
    ids = tokenizer(prompts, padding="max_length", max_length=64, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = reference_model(input_ids=ids, **segmenter.backbone.preprocess(images)).logits_per_image
    assert probabilities.shape == (2, 3)
    assert (probabilities - torch.sigmoid(logits)).abs().max() <= 1e-5
    assert reference_model.logit_bias.item() == -2.0  # the scalars are not the zero defaults


def test_scores_are_sigmoid_of_scaled_cosine_with_synonym_max(segmenter, batch):
    _, features = batch
    embedded = segmenter.encode_labels(LABELS)
    with torch.no_grad():
        probabilities = segmenter.head(features, embedded.embeddings, embedded.label_index)
        patches = F.normalize(segmenter.head.patch_embeddings(features), dim=1)
    cosine = torch.einsum("bdhw,sd->bshw", patches, embedded.embeddings)
    per_synonym = torch.sigmoid(cosine * 10.0 - 2.0)
    expected = torch.stack([per_synonym[:, 0], per_synonym[:, 1:3].amax(dim=1), per_synonym[:, 3]], dim=1)
    expected = expected * features.mask[:, None]
    assert probabilities.shape == (2, 3, *features.mask.shape[1:])
    assert (probabilities - expected).abs().max() <= 1e-5


# --- variants against direct reference computations -------------------------------------------------

def reference_last_block(block, post_layernorm, x: torch.Tensor, grid: tuple[int, int], variant: str) -> torch.Tensor:
    """SCLIP / NACLIP's attention written out for one unpadded image: ``x [N, C]`` -> ``[N, C]``."""
    attention = block.self_attn
    heads, scale = attention.num_heads, attention.head_dim ** -0.5
    hidden = block.layer_norm1(x)

    def split(t):
        return t.reshape(t.shape[0], heads, -1).transpose(0, 1)  # [heads, N, d]

    q, k, v = split(attention.q_proj(hidden)), split(attention.k_proj(hidden)), split(attention.v_proj(hidden))
    if variant == "sclip":
        weights = torch.softmax(q @ q.transpose(1, 2) * scale, -1) + torch.softmax(k @ k.transpose(1, 2) * scale, -1)
    else:
        rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
        position = torch.stack([rows.flatten(), cols.flatten()], 1).float()
        prior = torch.exp(-torch.cdist(position, position) ** 2 / (2 * 5.0**2))
        weights = torch.softmax(k @ k.transpose(1, 2) * scale + prior, -1)
    attended = attention.out_proj((weights @ v).transpose(0, 1).reshape(x.shape[0], -1))
    if variant == "naclip":
        return post_layernorm(attended)
    out = x + attended
    return post_layernorm(out + block.mlp(block.layer_norm2(out)))


@pytest.mark.parametrize("variant", ["sclip", "naclip"])
def test_variants_match_their_definitions_and_ignore_padding(segmenter, batch, variant):
    _, features = batch
    head = head_variant(segmenter, variant)
    vision = segmenter.backbone.vision_model
    with torch.no_grad():
        tokens, mask, grid = head._tokens(features)
        got = head.last_block(tokens, mask, grid)
        plain = segmenter.head.last_block(tokens, mask, grid)
        for b in range(tokens.shape[0]):
            height, width = features.grid_sizes[b].tolist()
            own = features.maps[0][b, :, :height, :width].flatten(1).T
            expected = reference_last_block(vision.encoder.layers[-1], vision.post_layernorm, own, (height, width), variant)
            ours = got[b].reshape(*grid, -1)[:height, :width].reshape(height * width, -1)
            assert (ours - expected).abs().max() <= 1e-5
    assert ((got - plain).abs() * mask[..., None]).max() > 1e-2  # the variant changes the tokens


def test_gaussian_prior_is_nacips_neighbourhood():
    prior = gaussian_grid_prior(3, 4, std=2.0)
    assert prior.shape == (12, 12)
    assert prior[0, 0] == 1.0
    assert prior[0, 5].item() == pytest.approx(math.exp(-2 / 8))  # (0,0) -> (1,1)
    assert prior[0, 11].item() == pytest.approx(math.exp(-(4 + 9) / 8))  # (0,0) -> (2,3)


def test_head_refuses_wrong_variant_and_wrong_backbone(segmenter, tiny_naflex_text_dir):
    with pytest.raises(RequestError, match="plain"):
        head_variant(segmenter, "maskclip")
    wrong = load_backbone(str(tiny_naflex_text_dir), layers=1, norm=True)
    with pytest.raises(RequestError, match=r"layers=\[-2\], norm=False"):
        OpenVocabHead.from_backbone(wrong, 0.0, 0.0)
    assert BACKBONE_KWARGS == {"layers": [-2], "norm": False}


# --- segmenter results ------------------------------------------------------------------------------

def test_results_have_the_images_size_and_upsampled_grid_scores(segmenter, images):
    results = segmenter.segment_batch(images, LABELS)
    probabilities, grid_sizes = segmenter.grid_probabilities(images, LABELS)
    for i, (image, result) in enumerate(zip(images, results)):
        height, width = image.shape[:2]
        assert result.scores.shape == (3, height, width) and result.label_map.shape == (height, width)
        assert result.labels == LABELS and result.background_index is None
        gh, gw = grid_sizes[i].tolist()
        expected = F.interpolate(probabilities[i : i + 1, :, :gh, :gw], size=(height, width), mode="bilinear",
                                 align_corners=False)[0]
        assert (result.scores - expected).abs().max() <= 1e-6
        assert torch.equal(result.label_map, result.scores.argmax(0))
    single = segmenter(images[1], LABELS)
    assert (single.scores - results[1].scores).abs().max() <= 1e-5  # batch padding changes nothing


def test_native_batches_group_similar_grids_and_keep_the_order(segmenter):
    rng = np.random.default_rng(3)
    shapes = [(30, 45), (41, 19), (33, 33), (32, 48), (40, 20), (35, 35)]  # wide, tall, square, twice
    images = [random_image(rng, h, w) for h, w in shapes]
    budget = segmenter.backbone.image_processor.max_num_patches
    grids = [naflex_grid_size(h, w, segmenter.backbone.patch_size, budget) for h, w in shapes]
    segmenter.batch_size = 2
    try:
        batches = segmenter.native_batches(images)
        results = segmenter.segment_batch(images, LABELS)
        classified = segmenter.classify(images, LABELS)
    finally:
        segmenter.batch_size = 8
    assert sorted(i for batch in batches for i in batch) == list(range(6)) and max(map(len, batches)) == 2
    for batch in batches:  # a batch holds one orientation: the wide pair, the tall pair, the square pair
        assert len({np.sign(grids[i][0] - grids[i][1]) for i in batch}) == 1
    for image, result in zip(images, results):  # each result belongs to its own image, as run alone
        alone = segmenter(image, LABELS)
        assert result.scores.shape[1:] == image.shape[:2]
        assert (result.scores - alone.scores).abs().max() <= 1e-5
    alone = torch.cat([segmenter.classify([image], LABELS) for image in images])
    assert classified.shape == (6, len(LABELS)) and (classified - alone).abs().max() <= 1e-5  # rows in input order
    assert len({tuple(row.tolist()) for row in alone}) == 6  # the six images score differently, so order shows


def test_rle_decodes_to_the_label_map_and_json_covers_the_image(segmenter, images):
    from pycocotools import mask as mask_utils

    result = segmenter(images[0], LABELS)
    rles = result.to_coco_rle()
    assert len(rles) == 3
    for k, rle in enumerate(rles):
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), (result.label_map == k).numpy())
    coco = result.to_coco_json(file_name="a.png")
    assert sum(a["area"] for a in coco["annotations"]) == 30 * 45
    assert [c["name"] for c in coco["categories"]] == LABELS
    assert all(0 < a["score"] < 1 for a in coco["annotations"])


def test_background_threshold(segmenter, images):
    everything = segmenter.segment_batch(images[:1], LABELS)[0]
    segmenter.background_threshold = 1.0
    try:
        background = segmenter(images[0], LABELS)
    finally:
        segmenter.background_threshold = None
    assert background.background_index == 3 and bool((background.label_map == 3).all())
    assert background.shares()["background"] == 1.0 and not bool((everything.label_map == 3).any())


def test_save_writes_overlay_label_png_and_json(segmenter, images, tmp_path):
    result = segmenter(images[0], ["cat", "кошка", "猫"])
    paths = result.save(tmp_path, stem="noise")
    assert np.array_equal(np.asarray(Image.open(paths["label_map"])), result.label_map.numpy())
    overlay = Image.open(paths["overlay"])
    assert overlay.height >= 30 and overlay.width > 45  # image plus legend panel
    assert json.loads(paths["json"].read_text())["categories"][2]["name"] == "猫"


def test_sliding_window_with_one_full_window_equals_native(segmenter, images):
    native = segmenter(images[0], LABELS)
    segmenter.inference, segmenter.crop, segmenter.stride = "slide", (30, 45), (30, 45)
    try:
        one_window = segmenter(images[0], LABELS)
        segmenter.crop, segmenter.stride = (24, 24), (16, 16)
        windows = segmenter(images[0], LABELS)
    finally:
        segmenter.inference = "native"
    assert (one_window.scores - native.scores).abs().max() <= 1e-5
    assert windows.scores.shape == (3, 30, 45) and (windows.scores - native.scores).abs().max() > 1e-3


def test_label_rules_through_the_segmenter(segmenter, images):
    with pytest.raises(RequestError, match="empty list"):
        segmenter(images[0], [])
    with pytest.raises(RequestError, match="duplicate label.*'sky'.*'Sky'"):
        segmenter(images[0], ["sky", "Sky"])
    long_label = "cat dog sky tree " * 32
    result = segmenter(images[0], [long_label, "कुत्ता", "قطة"])
    assert result.scores.shape == (3, 30, 45) and torch.isfinite(result.scores).all()


def test_fixres_checkpoint_segments_at_its_training_size(tiny_fixres_dir, tmp_path):
    import shutil

    from conftest import build_tiny_tokenizer
    from transformers import AutoTokenizer, SiglipModel

    directory = tmp_path / "fixres-text"
    shutil.copytree(tiny_fixres_dir, directory)
    build_tiny_tokenizer(directory)
    fixres = OpenVocabSegmenter.from_pretrained(str(directory), cache_dir=tmp_path / "cache")
    image = random_image(np.random.default_rng(1), 50, 70)
    assert fixres.size == (32, 32)
    assert fixres(image, LABELS).scores.shape == (3, 50, 70)
    ids = AutoTokenizer.from_pretrained(directory)(
        ["this is a photo of cat", "this is a photo of sky"], padding="max_length", max_length=64, return_tensors="pt"
    )["input_ids"]
    with torch.no_grad():
        pixels = fixres.backbone.preprocess([image], size=(32, 32))["pixel_values"]
        expected = torch.sigmoid(SiglipModel.from_pretrained(directory).eval()(input_ids=ids, pixel_values=pixels).logits_per_image)
    assert (fixres.classify([image], ["cat", "sky"]) - expected).abs().max() <= 1e-5


# --- command line -----------------------------------------------------------------------------------

def test_segment_tool_end_to_end(tiny_naflex_text_dir, images, tmp_path):
    image_path = tmp_path / "street.png"
    Image.fromarray(images[0]).save(image_path)
    out = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, str(REPO / "tools" / "segment.py"), str(image_path), "--labels", "person, people; car; sky",
         "--model", str(tiny_naflex_text_dir), "--out", str(out), "--cache-dir", str(tmp_path / "cache"),
         "--variant", "naclip"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in out.iterdir()) == ["results.jsonl", "street.json", "street_labels.png",
                                                     "street_overlay.png"]
    shares = [float(line.split("%")[0]) for line in completed.stdout.splitlines() if line.endswith(("car", "sky",
                                                                                                     "people"))]
    assert sum(shares) == pytest.approx(100.0, abs=0.05)
    coco = json.loads((out / "street.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["person, people", "car", "sky"]
    assert np.asarray(Image.open(out / "street_labels.png")).shape == (30, 45)
