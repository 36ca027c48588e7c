"""Grouping NaFlex images by grid shape: a partition, with less padding than the naive order."""

from __future__ import annotations

import numpy as np
import torch

from siglip2_dense.backbone.naflex_batching import (
    batches_by_shape,
    batches_in_order,
    naflex_grid_size,
    padding_fractions,
)


def test_grid_size_matches_the_processor(tiny_naflex_dir):
    from transformers import Siglip2ImageProcessor

    processor = Siglip2ImageProcessor.from_pretrained(tiny_naflex_dir)
    for height, width in [(40, 60), (64, 20), (7, 300), (512, 683)]:
        image = np.zeros((height, width, 3), np.uint8)
        out = processor(images=[image], max_num_patches=48, return_tensors="pt")
        assert tuple(out["spatial_shapes"][0].tolist()) == naflex_grid_size(height, width, 4, 48)


def test_padding_fractions_by_hand():
    sizes = [(2, 2), (1, 4), (2, 2), (1, 4)]
    naive = padding_fractions(sizes, batches_in_order(4, 2))
    # each naive batch holds a 2x2 and a 1x4: no token padding (4 = 4), grid 2x4 = 8 cells per image
    assert naive == (0.0, 1 - 16 / 32)
    grouped = batches_by_shape(sizes, 2)
    assert sorted(i for b in grouped for i in b) == [0, 1, 2, 3]
    assert padding_fractions(sizes, grouped) == (0.0, 0.0)


def test_grouping_is_a_partition_and_reduces_padding():
    rng = np.random.default_rng(0)
    sizes = [naflex_grid_size(int(h), int(w), 16, 1024)
             for h, w in zip(rng.integers(200, 2000, 64), rng.integers(200, 2000, 64))]
    grouped = batches_by_shape(sizes, 8)
    assert sorted(i for b in grouped for i in b) == list(range(64))
    tokens, cells = padding_fractions(sizes, grouped)
    naive_tokens, naive_cells = padding_fractions(sizes, batches_in_order(64, 8))
    assert tokens <= naive_tokens and cells < naive_cells
    assert tokens <= 0.10
    assert torch.tensor(sizes).prod(-1).max() <= 1024
