"""CLIP through the open-vocabulary head: a random ``CLIPModel`` saved and loaded back, parity with
transformers' own forward and with a transcription of SCLIP's per-patch formula (wangf3014/SCLIP
``clip/model.py`` ``encode_image(return_all=True, csa=True)`` + ``clip_segmentor.py`` ``forward_feature``)."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image

from siglip2_dense.openvocab.clip import CLIPOpenVocabHead, clip_segmenter, is_clip_checkpoint, load_clip

LABELS = ["cat", "dog, puppy", "sky"]


def write_tiny_clip_tokenizer(directory):
    """A character-level CLIP BPE vocabulary (every letter, with and without ``</w>``), no merges."""
    from transformers import CLIPTokenizer

    letters = list(string.ascii_lowercase) + list(".,'{}")
    tokens = ["!"] + letters + [c + "</w>" for c in letters] + ["<|startoftext|>", "<|endoftext|>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), pad_token="!")
    tokenizer.save_pretrained(directory)
    return len(tokens)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory = tmp_path_factory.mktemp("tiny-clip")
    vocab = write_tiny_clip_tokenizer(directory)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, bos_token_id=vocab - 2,
                         eos_token_id=vocab - 1, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=32, patch_size=4),
        projection_dim=24,
    )
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def loaded(clip_dir):
    return load_clip(str(clip_dir))


def reference_sclip_patches(model, pixel_values):
    """SCLIP's ``encode_image(return_all=True, csa=True)[:, 1:]`` transcribed on the transformers weights."""
    vision = model.vision_model
    x = vision.pre_layrnorm(vision.embeddings(pixel_values, interpolate_pos_encoding=True))  # [B, L, C]
    for layer in vision.encoder.layers[:-1]:
        out = layer(x, attention_mask=None)
        x = out[0] if isinstance(out, tuple) else out
    block = vision.encoder.layers[-1]
    attn = block.self_attn
    num_heads = attn.num_heads
    x = x.permute(1, 0, 2)  # NLD -> LND
    h = block.layer_norm1(x)
    in_proj_weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
    in_proj_bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])
    _, bsz, embed_dim = h.size()
    head_dim = embed_dim // num_heads
    scale = head_dim ** -0.5
    q, k, v = F.linear(h, in_proj_weight, in_proj_bias).chunk(3, dim=-1)
    q = q.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    k = k.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    v = v.contiguous().view(-1, bsz * num_heads, head_dim).transpose(0, 1)
    attn_weights = F.softmax(torch.bmm(q, q.transpose(1, 2)) * scale, -1) + F.softmax(torch.bmm(k, k.transpose(1, 2)) * scale, -1)
    out = torch.bmm(attn_weights, v).transpose(0, 1).contiguous().view(-1, bsz, embed_dim)
    x = x + attn.out_proj(out)
    x = x + block.mlp(block.layer_norm2(x))
    x = x.permute(1, 0, 2)
    features = model.visual_projection(vision.post_layernorm(x))
    features = features / features.norm(dim=-1, keepdim=True)
    return features[:, 1:]


def test_plain_head_equals_transformers_tokens(clip_dir, loaded):
    from transformers import CLIPModel

    backbone, _ = loaded
    model = CLIPModel.from_pretrained(clip_dir).eval()
    image = random_image(np.random.default_rng(0), 40, 48)
    inputs = backbone.preprocess([image])
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 40, 48)
    with torch.no_grad():
        features = backbone(**inputs)
        got = CLIPOpenVocabHead(backbone, "plain").patch_embeddings(features)  # [1, D, 10, 12]
        hidden = model.vision_model(pixel_values=inputs["pixel_values"], interpolate_pos_encoding=True).last_hidden_state
        expected = model.visual_projection(model.vision_model.post_layernorm(hidden))[:, 1:]
    assert got.shape == (1, 24, 10, 12)
    assert (got.flatten(2).transpose(1, 2) - expected).abs().max() <= 1e-5


def test_sclip_cosines_match_sclips_formula(loaded):
    backbone, text = loaded
    image = random_image(np.random.default_rng(1), 32, 32)
    embedded = text.encode_labels(LABELS, "single")
    head = CLIPOpenVocabHead(backbone, "sclip")
    with torch.no_grad():
        inputs = backbone.preprocess([image])
        cosines = head(backbone(**inputs), embedded.embeddings)
        patches = reference_sclip_patches(backbone, inputs["pixel_values"])
    logits = patches @ embedded.embeddings.T  # clip_segmentor.py forward_feature
    expected = logits.permute(0, 2, 1).reshape(-1, 4, 8, 8)
    assert cosines.shape == (1, 4, 8, 8) and (cosines - expected).abs().max() <= 1e-5
    probabilities = head.probabilities(cosines[0], embedded.label_index)
    softmax = torch.softmax(expected[0] * 40.0, dim=0)  # postprocess_result: logit_scale 40, max over synonyms
    want = torch.stack([softmax[0], softmax[1:3].amax(0), softmax[3]])
    assert (probabilities - want).abs().max() <= 1e-6


def test_text_embeddings_are_the_lineages_template_ensemble(clip_dir, loaded):
    from transformers import AutoTokenizer, CLIPModel

    _, text = loaded
    model = CLIPModel.from_pretrained(clip_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(clip_dir)
    templates = ["a photo of a {}.", "a bad photo of the {}."]
    embedded = text.encode_labels(LABELS, templates)
    assert embedded.synonyms == ("cat", "dog", "puppy", "sky") and embedded.label_index.tolist() == [0, 1, 1, 2]
    for row, query in enumerate(embedded.synonyms):
        ids = tokenizer([t.format(query) for t in templates], padding="max_length", max_length=77, return_tensors="pt")
        with torch.no_grad():
            out = model.get_text_features(**ids)
        feature = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1).mean(0)
        assert (embedded.embeddings[row] - feature / feature.norm()).abs().max() <= 1e-5


def test_clip_segments_through_the_segmenter(clip_dir, tmp_path):
    assert is_clip_checkpoint(str(clip_dir)) and not is_clip_checkpoint(str(tmp_path))
    segmenter = clip_segmenter(str(clip_dir), variant="naclip", templates="single", crop=(32, 32), stride=(16, 16),
                               pamr_iterations=2)
    result = segmenter(random_image(np.random.default_rng(2), 50, 70), LABELS)
    assert result.scores.shape == (3, 50, 70) and result.label_map.shape == (50, 70)
    assert bool((result.scores.sum(0) <= 1.0 + 1e-5).all())  # maxima of one softmax over the queries
