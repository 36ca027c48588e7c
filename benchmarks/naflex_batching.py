"""NaFlex batches of mixed aspect ratios: padding and throughput, grouped vs naive order.

An ADE20K-like size distribution (aspect ratios of ADE20K photos, long side 256-2048 px) at a
patch budget; the base-size NaFlex backbone (random weights) runs every batch. The grouping is
:func:`siglip2_dense.backbone.naflex_batching.batches_by_shape`, what ``OpenVocabSegmenter.segment_batch``
uses. Figures: the padded-token fraction with grouping (target <= 0.10); for the record, the padded
grid-cell fraction the heads see and grouped / naive images/s (the backbone already trims every
batch's padding to its longest image, so naive order pads little too).

Run: ``python benchmarks/naflex_batching.py``
"""

from __future__ import annotations

import numpy as np
import torch
from backbone import base_naflex_backbone
from measure import Figure, interleaved_seconds, print_figures

from siglip2_dense.backbone.naflex_batching import (
    batches_by_shape,
    batches_in_order,
    naflex_grid_size,
    padding_fractions,
)

ASPECT_RATIOS = (4 / 3, 3 / 4, 1.0, 3 / 2, 2 / 3, 16 / 9, 9 / 16, 2.0)  # width / height
BUDGET = 256
BATCH = 8


def ade20k_like_sizes(count: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    sizes = []
    for _ in range(count):
        ratio = ASPECT_RATIOS[rng.integers(len(ASPECT_RATIOS))]
        long_side = int(rng.integers(256, 2048))
        height, width = (long_side, int(long_side * ratio)) if ratio < 1 else (int(long_side / ratio), long_side)
        sizes.append((height, width))
    return sizes


def run() -> list[Figure]:
    torch.manual_seed(0)
    sizes = ade20k_like_sizes(32)
    grids = [naflex_grid_size(h, w, 16, BUDGET) for h, w in sizes]
    # the backbone cost depends only on the grid; small images with the same grid stand in for big ones
    images = [np.random.default_rng(i).integers(0, 256, (gh * 16, gw * 16, 3), dtype=np.uint8)
              for i, (gh, gw) in enumerate(grids)]
    naive, grouped = batches_in_order(len(sizes), BATCH), batches_by_shape(grids, BATCH)
    bb = base_naflex_backbone()
    prepared = {
        name: [bb.preprocess([images[i] for i in batch], max_num_patches=BUDGET) for batch in batches]
        for name, batches in (("naive", naive), ("grouped", grouped))
    }

    def runner(name):
        def run_all_batches() -> None:
            with torch.inference_mode():
                for inputs in prepared[name]:
                    bb(**inputs)
        return run_all_batches

    times = interleaved_seconds({name: runner(name) for name in prepared}, repeats=3)
    tokens_grouped, cells_grouped = padding_fractions(grids, grouped)
    tokens_naive, cells_naive = padding_fractions(grids, naive)
    return [
        Figure("NaFlex grouped batches: padded token fraction", tokens_grouped, 0.10, higher_is_better=False,
               detail=f"naive order {tokens_naive:.3f}; {BUDGET}-patch budget, batch {BATCH}"),
        Figure("NaFlex grouped batches: padded grid-cell fraction (heads)", cells_grouped, 0.10,
               higher_is_better=False, detail=f"naive order {cells_naive:.3f}", kind="report"),
        Figure("NaFlex grouped / naive images/s", times["naive"] / times["grouped"], 1.0,
               detail=f"grouped {len(sizes) / times['grouped']:.2f} img/s, naive {len(sizes) / times['naive']:.2f}",
               kind="report"),
    ]


if __name__ == "__main__":
    print_figures("NaFlex batching", run())
