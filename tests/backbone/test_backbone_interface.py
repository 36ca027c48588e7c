"""Both tower kinds implement the declared backbone interface that heads and evaluation rely on."""

from __future__ import annotations

import numpy as np
import torch

import siglip2_dense as sd
from siglip2_dense.backbone.features import DenseBackbone, DenseFeatures


def test_siglip_and_timm_backbones_implement_the_interface(tiny_naflex_dir, tiny_fixres_dir):
    backbones = [
        sd.load_backbone(str(tiny_naflex_dir), layers=2),
        sd.load_backbone(str(tiny_fixres_dir), layers=[0]),
        sd.load_backbone("timm:vit_tiny_patch16_224", layers=1, pretrained=False),
    ]
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    for backbone in backbones:
        assert isinstance(backbone, DenseBackbone), type(backbone).__name__
        inputs = backbone.preprocess([image])
        assert (inputs["pixel_values"].ndim == 3) == backbone.is_naflex  # patch sequences only for NaFlex
        with torch.inference_mode():
            features = backbone(**inputs)
        assert isinstance(features, DenseFeatures)
        assert [m.shape[1] for m in features.maps] == backbone.out_channels
        assert len(backbone.layers) == len(backbone.out_channels) and max(backbone.layers) < backbone.num_blocks


def test_an_object_missing_part_of_the_interface_is_not_a_backbone():
    class NoPatchSize:
        out_channels, layers, is_naflex, num_blocks, name_or_path = [8], [0], True, 1, "x"

        def preprocess(self, images, max_num_patches=None, size=None):
            return {}

        def __call__(self, pixel_values, spatial_shapes, pixel_attention_mask=None):
            return None

    assert not isinstance(NoPatchSize(), DenseBackbone)
    NoPatchSize.patch_size = 16
    assert isinstance(NoPatchSize(), DenseBackbone)
