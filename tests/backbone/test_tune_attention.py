"""``tune_attention``: CAT-Seg's attention-only fine-tuning (q / v projections of every block and
the position embedding) on FixRes and NaFlex towers, and the combinations it refuses."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from conftest import random_image

import siglip2_dense as sd
from siglip2_dense.errors import RequestError

# what trains, by state-dict name of the backbone; everything else of the tower must not
TUNED = re.compile(r"vision_model\.(embeddings\.position_embedding\.weight"
                   r"|encoder\.layers\.\d+\.self_attn\.[qv]_proj\.(weight|bias))")


def expected_tuned(backbone) -> set[str]:
    names = {name for name, _ in backbone.named_parameters() if TUNED.fullmatch(name)}
    assert len(names) == 1 + 4 * backbone.num_blocks  # position table + q/v weight/bias per block
    return names


@pytest.fixture(params=["naflex", "fixres"])
def checkpoint(request, tiny_naflex_dir, tiny_fixres_dir):
    return tiny_naflex_dir if request.param == "naflex" else tiny_fixres_dir


def backward_on_features(backbone, rng) -> None:
    images = [random_image(rng, 40, 60), random_image(rng, 24, 20)]  # FixRes: padded, positions interpolated
    feats = backbone(**backbone.preprocess(images))
    (sum(m.square().mean() for m in feats.maps) + feats.pooled.square().mean()).backward()


def test_exactly_q_v_and_the_position_embedding_get_gradients(checkpoint, rng):
    bb = sd.load_backbone(str(checkpoint), layers=[0, -1], tune_attention=True)
    bb.train()
    assert bb.tuned and not bb.frozen and bb.first_tuned_block == 0
    want = expected_tuned(bb)
    assert "vision_model.encoder.layers.0.self_attn.q_proj.weight" in want
    assert {n for n, p in bb.named_parameters() if p.requires_grad} == want
    backward_on_features(bb, rng)
    with_grad = {n for n, p in bb.named_parameters() if p.grad is not None}
    assert with_grad == want
    assert all(bb.get_parameter(n).grad.abs().sum() > 0 for n in want), "every tuned tensor gets a gradient"
    # the rest of the tower stays frozen, in eval mode; the attention modules follow train()
    vm = bb.vision_model
    block = vm.encoder.layers[0]
    assert block.self_attn.training and vm.embeddings.position_embedding.training
    assert not any(m.training for m in (block.layer_norm1, block.layer_norm2, block.mlp, vm.post_layernorm,
                                        vm.head, vm.embeddings.patch_embedding))
    bb.eval()
    assert not block.self_attn.training


def test_frozen_parts_are_bit_identical_to_the_frozen_tower(checkpoint, rng):
    """Tuning changes which parameters train, not what the tower computes."""
    images = [random_image(rng, 32, 32), random_image(rng, 20, 28)]
    frozen, tuned = sd.load_backbone(str(checkpoint)), sd.load_backbone(str(checkpoint), tune_attention=True)
    with torch.no_grad():
        want, got = frozen(**frozen.preprocess(images)), tuned(**tuned.preprocess(images))
    assert torch.equal(want.maps[0], got.maps[0]) and torch.equal(want.pooled, got.pooled)


@pytest.mark.parametrize("kwargs, words", [
    (dict(tune_last_blocks=1), ["tune_attention", "tune_last_blocks=1"]),
    (dict(freeze=False), ["tune_attention", "freeze=False"]),
    (dict(quantize="int8"), ["frozen", "tune_attention"]),
])
def test_other_tuning_choices_with_tune_attention_are_refused(tiny_naflex_dir, kwargs, words):
    with pytest.raises(RequestError) as raised:
        sd.load_backbone(str(tiny_naflex_dir), tune_attention=True, **kwargs)
    assert all(word in str(raised.value) for word in words), str(raised.value)


def test_timm_backbones_refuse_tune_attention():
    with pytest.raises(RequestError, match=r"tune_attention applies to SigLIP / SigLIP2 towers.*fused qkv"):
        sd.load_backbone("timm:vit_tiny_patch16_224", pretrained=False, tune_attention=True)


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(3)
