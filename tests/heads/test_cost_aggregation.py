"""CostAggregationHead: CAT-Seg's formulas (against an independent transcription of its modules), padding
safety on NaFlex grids, class permutation equivariance, any class count, pad_len selection, save / load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from siglip2_dense import DenseModel, load_backbone
from siglip2_dense.backbone.features import DenseFeatures, grid_mask
from siglip2_dense.errors import RequestError
from siglip2_dense.heads import HEADS, CostAggregationHead, build_head
from siglip2_dense.heads.cost_aggregation import UNSELECTED_LOGIT
from siglip2_dense.heads.cost_aggregation_blocks import (
    ClassAggregation,
    WindowedSpatialBlock,
    linear_attention,
    masked_group_norm,
)
from siglip2_dense.heads.openvocab import map_value_path

DEMO = "assets/demo-siglip2"
SMALL = {"hidden_dim": 32, "text_guidance_dim": 16, "appearance_guidance_dim": 16, "decoder_dims": (32, 16),
         "decoder_guidance_dims": (16, 16), "decoder_guidance_proj_dims": (16, 16), "window_size": 4}


@pytest.fixture(scope="module")
def backbone():
    return load_backbone(DEMO, layers=[0, 1, 3], norm=False)


def make_head(backbone, classes: int = 5, **kwargs) -> CostAggregationHead:
    torch.manual_seed(0)
    options = {**SMALL, **kwargs}
    head = build_head("cost_aggregation", in_channels=backbone.out_channels, num_classes=classes,
                      labels=[f"class {i}" for i in range(classes)], **options)
    head.bind_backbone(backbone)
    return head.eval()


def features_of(backbone, images):
    with torch.no_grad():
        return backbone(**backbone.preprocess(images))


def images(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (128, 96, 3), dtype=np.uint8), rng.integers(0, 256, (72, 128, 3), dtype=np.uint8)]


def test_registered_and_trained_from_labels():
    assert HEADS["cost_aggregation"] is CostAggregationHead
    assert CostAggregationHead.learns_from_labels


def test_padded_batch_equals_each_image_alone_and_padding_is_zero(backbone):
    head = make_head(backbone)
    text = torch.randn(5, 1, 128)
    batch = features_of(backbone, images())
    assert batch.mask.shape[1:] != tuple(batch.grid_sizes[0].tolist())  # the batch is padded
    with torch.no_grad():
        together = head(batch, text)
        for index, image in enumerate(images()):
            alone = head(features_of(backbone, [image]), text)[0]
            height, width = (batch.grid_sizes[index] * 4).tolist()
            assert alone.shape[-2:] == (height, width)
            torch.testing.assert_close(together[index, :, :height, :width], alone, atol=2e-5, rtol=1e-4)
            assert together[index, :, height:].abs().sum() == 0 and together[index, :, :, width:].abs().sum() == 0


def test_classes_permute_with_the_vocabulary_and_any_count_works(backbone):
    head = make_head(backbone)
    features = features_of(backbone, images())
    text = torch.randn(7, 1, 128)
    order = torch.tensor([3, 6, 0, 5, 1, 4, 2])
    with torch.no_grad():
        logits = head(features, text)
        permuted = head(features, text[order])
        assert logits.shape[1] == 7  # built for 5 training classes, scores 7
        torch.testing.assert_close(permuted, logits[:, order], atol=2e-5, rtol=1e-4)
        assert head(features, text[:2]).shape[1] == 2


def test_more_classes_than_pad_len_keeps_each_images_best_and_gives_the_rest_minus_100(backbone):
    head = make_head(backbone, pad_len=4)
    features = features_of(backbone, images())
    text = torch.randn(9, 1, 128)
    with torch.no_grad():
        logits = head(features, text)
        cost = head.cost_volume(head.patch_embeddings(features.maps[2], features.mask), text)
    best = cost.masked_fill(~features.mask[:, None, None], float("-inf")).flatten(2).amax(-1)
    for index in range(2):
        height, width = (features.grid_sizes[index] * 4).tolist()
        real = logits[index, :, :height, :width]
        kept = set(best[index].topk(4).indices.tolist())
        unselected = [k for k in range(9) if k not in kept]
        assert (real[unselected] == UNSELECTED_LOGIT).all()
        assert all((real[k] != UNSELECTED_LOGIT).any() for k in kept)


def test_patch_embeddings_are_the_map_value_path_of_the_final_tokens(backbone):
    head = make_head(backbone)
    features = features_of(backbone, images()[:1])
    with torch.no_grad():
        reference = backbone.vision_model(**{k: v for k, v in backbone.preprocess(images()[:1]).items()})
        tokens = reference.last_hidden_state  # after post_layernorm
        expected = map_value_path(backbone.vision_model, tokens, mlp=True)
        height, width = features.grid_sizes[0].tolist()
        got = head.patch_embeddings(features.maps[2], features.mask)[0, :, :height, :width]
    torch.testing.assert_close(got.flatten(1).T, expected[0, : height * width], atol=1e-5, rtol=1e-4)


# --- the blocks against an independent transcription of CAT-Seg's modules --------------------------------


def swin_reference(block: WindowedSpatialBlock, x, guidance, height, width, window, shift):
    """CAT-Seg SwinTransformerBlock.forward (roll, window_partition, -100 region mask), on a full grid."""
    count, _, channels = x.shape
    shortcut = x
    normed = block.norm1(x).view(count, height, width, channels)
    joined = torch.cat([normed, guidance.view(count, height, width, -1)], dim=-1)
    if shift:
        joined = torch.roll(joined, shifts=(-shift, -shift), dims=(1, 2))
        regions = torch.zeros(1, height, width, 1)
        label = 0
        for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
                regions[:, rows, cols, :] = label
                label += 1
        parts = regions.view(1, height // window, window, width // window, window, 1).permute(0, 1, 3, 2, 4, 5)
        parts = parts.reshape(-1, window * window)
        attn_mask = (parts[:, None] - parts[:, :, None]).ne(0).float() * -100.0
    else:
        attn_mask = None
    windows = joined.view(count, height // window, window, width // window, window, -1).permute(0, 1, 3, 2, 4, 5)
    windows = windows.reshape(-1, window * window, joined.shape[-1])
    heads = block.num_heads
    q = block.q(windows).reshape(windows.shape[0], -1, heads, channels // heads).permute(0, 2, 1, 3)
    k = block.k(windows).reshape(windows.shape[0], -1, heads, channels // heads).permute(0, 2, 1, 3)
    v = block.v(windows[..., :channels]).reshape(windows.shape[0], -1, heads, channels // heads).permute(0, 2, 1, 3)
    attn = (q * (channels // heads) ** -0.5) @ k.transpose(-2, -1)
    if attn_mask is not None:
        attn = attn.view(-1, attn_mask.shape[0], heads, window * window, window * window) + attn_mask[None, :, None]
        attn = attn.view(-1, heads, window * window, window * window)
    out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, window * window, channels)
    out = block.proj(out).view(count, height // window, width // window, window, window, channels)
    out = out.permute(0, 1, 3, 2, 4, 5).reshape(count, height, width, channels)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    x = shortcut + out.reshape(count, height * width, channels)
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_block_equals_catseg_swin_block_on_a_whole_number_of_windows(shift):
    torch.manual_seed(0)
    block = WindowedSpatialBlock(dim=16, guidance_dim=8, num_heads=4, window=4, shift=shift)
    x, guidance = torch.randn(3, 8, 8, 16), torch.randn(3, 8, 8, 8)
    got = block(x, guidance, torch.ones(3, 8, 8, dtype=torch.bool))
    want = swin_reference(block, x.reshape(3, 64, 16), guidance.reshape(3, 64, 8), 8, 8, 4, shift)
    torch.testing.assert_close(got.reshape(3, 64, 16), want, atol=1e-5, rtol=1e-4)


def test_linear_attention_equals_catseg_formula():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 5, 4, 8), torch.randn(2, 7, 4, 8), torch.randn(2, 7, 4, 8)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    # out_l = sum_s (phi_q_l . phi_k_s) v_s / sum_s (phi_q_l . phi_k_s), per head
    weights = torch.einsum("nlhd,nshd->nlsh", phi_q, phi_k)
    want = torch.einsum("nlsh,nshd->nlhd", weights, v) / (weights.sum(dim=2)[..., None] + 1e-6)
    torch.testing.assert_close(linear_attention(q, k, v), want, atol=1e-5, rtol=1e-4)


def test_class_aggregation_equals_catseg_layer_without_padding():
    torch.manual_seed(0)
    layer = ClassAggregation(dim=16, guidance_dim=8, num_heads=4, pooling=2, pad_len=0)
    x, guidance = torch.randn(2, 5, 16, 6, 6), torch.randn(5, 8)
    got = layer(x, guidance, torch.ones(2, 6, 6, dtype=torch.bool))
    # CAT-Seg ClassTransformerLayer.forward: AvgPool2d(2), tokens per cell, attention + MLP, back up, add
    pooled = F.avg_pool2d(x.reshape(10, 16, 6, 6), 2).reshape(2, 5, 16, 3, 3)
    tokens = pooled.permute(0, 3, 4, 1, 2).reshape(18, 5, 16)
    normed = layer.norm1(tokens)
    joined = torch.cat([normed, guidance.expand(18, -1, -1)], dim=-1)
    split = lambda t: t.reshape(18, 5, 4, 4)  # noqa: E731
    tokens = tokens + linear_attention(split(layer.q(joined)), split(layer.k(joined)), split(layer.v(normed))).reshape(18, 5, 16)
    tokens = tokens + layer.mlp(layer.norm2(tokens))
    back = tokens.reshape(2, 3, 3, 5, 16).permute(0, 3, 4, 1, 2).reshape(10, 16, 3, 3)
    up = F.interpolate(back, scale_factor=2, mode="bilinear", align_corners=False).reshape(2, 5, 16, 6, 6)
    torch.testing.assert_close(got, x + up, atol=1e-5, rtol=1e-4)


def test_masked_group_norm_equals_group_norm_of_the_real_cells():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(2, 8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(1, 8, 6, 7)
    mask = grid_mask(torch.tensor([[4, 5]]), 6, 7)
    got = masked_group_norm(norm, x, mask)[..., :4, :5]
    torch.testing.assert_close(got, norm(x[..., :4, :5]), atol=1e-5, rtol=1e-4)


# --- building, saving, loading ----------------------------------------------------------------------------


def test_bind_backbone_refuses_a_normed_or_short_backbone():
    head = build_head("cost_aggregation", in_channels=[128, 128, 128], num_classes=2, labels=["a", "b"])
    with pytest.raises(RequestError, match="norm=False"):
        head.bind_backbone(load_backbone(DEMO, layers=[0, 1, 3], norm=True))
    with pytest.raises(RequestError, match=r"layers=\[early, late, 3\]"):
        head.bind_backbone(load_backbone(DEMO, layers=[0, 1, 2], norm=False))
    features = DenseFeatures(maps=[torch.zeros(1, 128, 2, 2)] * 3, mask=torch.ones(1, 2, 2, dtype=torch.bool),
                             grid_sizes=torch.tensor([[2, 2]]))
    with pytest.raises(RequestError, match="no vocabulary"):
        head(features)


def test_wrong_text_shape_names_the_templates(backbone):
    head = make_head(backbone)
    with pytest.raises(RequestError, match=r"expected \[classes, 1 templates, 128\]"):
        head.set_vocabulary(torch.randn(3, 2, 128))


def test_save_and_load_round_trip_with_the_vocabulary_given_again(backbone, tmp_path):
    head = make_head(backbone)
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    text = torch.randn(5, 1, 128)
    features = features_of(backbone, images())
    with torch.no_grad():
        expected = head(features, text)
    DenseModel(backbone, head).save_pretrained(tmp_path / "model")
    loaded = DenseModel.from_pretrained(tmp_path / "model")
    assert loaded.head.config["labels"] == [f"class {i}" for i in range(5)]
    with torch.no_grad():
        torch.testing.assert_close(loaded.head(features_of(loaded.backbone, images()), text), expected)
