"""Last-block variants and the MAP MLP option against independent transcriptions of each reference.

Each ``reference_*`` function below follows its repository's own code path for one unpadded image
(``[N, C]`` tokens, heads split as ``view(-1, heads, head_dim).transpose(0, 1)``, weights by ``bmm``):
ClearCLIP (mc-lan/ClearCLIP ``open_clip/transformer.py``, ``custom_attn`` with ``model_type='ClearCLIP'``
and ``ignore_residual=True``), ProxyCLIP (mc-lan/ProxyCLIP ``open_clip/transformer.py``, ``custom_attn``
with ``ex_feats``) and MaskCLIP's value path. The head runs a padded batch of two images.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_image

from siglip2_dense import load_backbone
from siglip2_dense.errors import RequestError
from siglip2_dense.heads.openvocab import BACKBONE_KWARGS, OpenVocabHead, default_map_mlp
from siglip2_dense.heads.openvocab_attention import VARIANTS, proxy_attention_logits


@pytest.fixture(scope="module")
def backbone(tiny_naflex_text_dir):
    return load_backbone(str(tiny_naflex_text_dir), **BACKBONE_KWARGS)


@pytest.fixture(scope="module")
def features(backbone):
    rng = np.random.default_rng(0)
    inputs = backbone.preprocess([random_image(rng, 30, 45), random_image(rng, 41, 19)])
    with torch.no_grad():
        return backbone(**inputs)


def make_head(backbone, variant, **kwargs) -> OpenVocabHead:
    return OpenVocabHead.from_backbone(backbone, 2.3, -2.0, variant=variant, **kwargs)


def own_tokens(features, b):
    height, width = features.grid_sizes[b].tolist()
    return features.maps[0][b, :, :height, :width].flatten(1).T, (height, width)


def split_heads(t, heads):
    return t.contiguous().view(t.shape[0], heads, -1).transpose(0, 1)  # [heads, N, d]


def reference_clearclip(block, post_layernorm, x):
    """ClearCLIP: ``out_proj(softmax(q q^T * scale) v)``, no residual, no FFN, then ln_post."""
    attn = block.self_attn
    heads, scale = attn.num_heads, attn.head_dim ** -0.5
    h = block.layer_norm1(x)
    q, v = split_heads(attn.q_proj(h), heads), split_heads(attn.v_proj(h), heads)
    weights = F.softmax(torch.bmm(q, q.transpose(1, 2)) * scale, dim=-1)
    out = torch.bmm(weights, v).transpose(0, 1).contiguous().view(x.shape[0], -1)
    return post_layernorm(attn.out_proj(out))


def reference_proxyclip(block, post_layernorm, x, ex_feats, beta=1.2, gamma=3.0):
    """ProxyCLIP with ``ex_feats [1, C', H, W]`` already on the patch grid (no value resampling)."""
    attn = block.self_attn
    heads = attn.num_heads
    v = split_heads(attn.v_proj(block.layer_norm1(x)), heads)
    q_k = F.normalize(ex_feats.flatten(2, 3), dim=1)
    similarity = torch.einsum("b c m, b c n -> b m n", q_k, q_k)
    similarity = (similarity - similarity.mean(dim=(1, 2), keepdim=True) * beta) * gamma
    similarity[similarity < 0.0] = float("-inf")
    mask = similarity.unsqueeze(1).repeat(1, heads, 1, 1).reshape(heads, x.shape[0], x.shape[0])
    out = torch.bmm(F.softmax(mask, dim=-1), v).transpose(0, 1).contiguous().view(x.shape[0], -1)
    return post_layernorm(attn.out_proj(out))


def test_clearclip_matches_its_transcription(backbone, features):
    head = make_head(backbone, "clearclip")
    vision = backbone.vision_model
    with torch.no_grad():
        tokens, mask, grid = head._tokens(features)
        got = head.last_block(tokens, mask, grid)
        for b in range(2):
            own, (height, width) = own_tokens(features, b)
            expected = reference_clearclip(vision.encoder.layers[-1], vision.post_layernorm, own)
            ours = got[b].reshape(*grid, -1)[:height, :width].reshape(height * width, -1)
            assert (ours - expected).abs().max() <= 1e-5


def test_proxyclip_matches_its_transcription(backbone, features):
    head = make_head(backbone, "proxyclip")
    vision = backbone.vision_model
    generator = torch.Generator().manual_seed(0)
    grid = tuple(features.mask.shape[1:])
    # smooth random proxy features (a low-resolution map upsampled), so pairs differ in similarity
    proxy = F.interpolate(torch.randn(2, 24, 3, 3, generator=generator), size=grid, mode="bilinear")
    proxy = proxy * features.mask[:, None]
    with torch.no_grad():
        tokens, mask, _ = head._tokens(features)
        got = head.last_block(tokens, mask, grid, proxy_features=proxy)
        for b in range(2):
            own, (height, width) = own_tokens(features, b)
            ex_feats = proxy[b : b + 1, :, :height, :width]
            expected = reference_proxyclip(vision.encoder.layers[-1], vision.post_layernorm, own, ex_feats)
            assert torch.isfinite(expected).all()
            ours = got[b].reshape(*grid, -1)[:height, :width].reshape(height * width, -1)
            assert (ours - expected).abs().max() <= 1e-5
        plain = make_head(backbone, "plain").last_block(tokens, mask, grid)
    assert ((got - plain).abs() * mask[..., None]).max() > 1e-2


def test_proxy_rows_without_a_positive_pair_keep_their_own_patch():
    proxy = torch.ones(1, 4, 3)  # every pair alike: mean 1, (1 - 1.2) * 3 < 0 everywhere
    logits = proxy_attention_logits(proxy, torch.ones(1, 4, dtype=torch.bool))
    assert torch.equal(torch.softmax(logits, -1)[0], torch.eye(4))
    mixed = torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [5.0, 5.0]]])
    logits = proxy_attention_logits(mixed, torch.tensor([[True, True, True, False]]))
    assert torch.isinf(logits[0, :, 3]).all()  # the padding key is never attended to
    real = F.normalize(mixed[0, :3], dim=-1)
    similarity = real @ real.T
    expected = (similarity - 1.2 * similarity.mean()) * 3.0  # the mean over the real pairs only
    finite = torch.isfinite(logits[0, :3, :3])
    assert torch.equal(finite, expected >= 0) and not bool(finite.all())
    assert torch.allclose(logits[0, :3, :3][finite], expected[finite])


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "proxyclip"])
def test_map_mlp_option_of_every_variant(backbone, features, variant):
    on, off = make_head(backbone, variant, map_mlp=True), make_head(backbone, variant, map_mlp=False)
    map_head = backbone.vision_model.head
    attention = map_head.attention
    width = attention.embed_dim
    with torch.no_grad():
        tokens, mask, grid = on._tokens(features)
        final = on.last_block(tokens, mask, grid)
        # MaskCLIP's value path written out: value rows of in_proj, then out_proj
        value = F.linear(final, attention.in_proj_weight[2 * width :], attention.in_proj_bias[2 * width :])
        projected = attention.out_proj(value)
        with_mlp = projected + map_head.mlp(map_head.layernorm(projected))
        got_on = on.patch_embeddings(features).flatten(2).transpose(1, 2)
        got_off = off.patch_embeddings(features).flatten(2).transpose(1, 2)
    real = mask[..., None]
    assert ((got_on - with_mlp).abs() * real).max() <= 1e-5
    assert ((got_off - projected).abs() * real).max() <= 1e-5
    assert ((got_on - got_off).abs() * real).max() > 1e-3


def test_value_variant_is_the_trained_block_and_the_map_value_path_alone(backbone, features):
    value, plain = make_head(backbone, "value"), make_head(backbone, "plain", map_mlp=False)
    assert default_map_mlp("value") is False and all(default_map_mlp(v) for v in VARIANTS if v != "value")
    assert value.map_mlp is False
    with torch.no_grad():
        assert torch.equal(value.patch_embeddings(features), plain.patch_embeddings(features))


def test_proxyclip_refuses_missing_or_misplaced_proxy_features(backbone, features):
    head = make_head(backbone, "proxyclip")
    with pytest.raises(RequestError, match="proxy_features"):
        head.patch_embeddings(features)
    with pytest.raises(RequestError, match="the patch grid"):
        head.patch_embeddings(features, proxy_features=torch.zeros(2, 8, 3, 3))
