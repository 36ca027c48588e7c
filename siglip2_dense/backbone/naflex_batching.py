"""Batching NaFlex images of mixed aspect ratios with little padding.

A NaFlex batch is padded twice: tokens to the longest image (``max h*w``) in the backbone,
and patch grids to ``(max h, max w)`` in the heads. Images of the same aspect ratio have the
same grid under a patch budget, so ordering by aspect ratio (then patch count) and cutting the
order into batches keeps both paddings small.
"""

from __future__ import annotations

from collections.abc import Sequence


def naflex_grid_size(height: int, width: int, patch_size: int, max_num_patches: int) -> tuple[int, int]:
    """The ``(h, w)`` patch grid transformers' ``Siglip2ImageProcessor`` gives an image."""
    from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

    target_h, target_w = get_image_size_for_max_num_patches(height, width, patch_size, max_num_patches)
    return target_h // patch_size, target_w // patch_size


def batches_by_shape(grid_sizes: Sequence[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Indices of the images cut into batches of similar grids.

    Args:
        grid_sizes: each image's ``(h, w)`` in patches.
        batch_size: images per batch (the last batch may be smaller).

    Returns:
        Lists of indices into ``grid_sizes``; every index appears exactly once.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    order = sorted(range(len(grid_sizes)), key=lambda i: (grid_sizes[i][0] / grid_sizes[i][1],
                                                          grid_sizes[i][0] * grid_sizes[i][1], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def batches_in_order(count: int, batch_size: int) -> list[list[int]]:
    """The naive batching: consecutive indices."""
    return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]


def padding_fractions(grid_sizes: Sequence[tuple[int, int]], batches: Sequence[Sequence[int]]) -> tuple[float, float]:
    """(padded tokens / tokens processed, padded grid cells / grid cells processed)."""
    real = padded_tokens = padded_cells = 0
    for batch in batches:
        shapes = [grid_sizes[i] for i in batch]
        counts = [h * w for h, w in shapes]
        longest = max(counts)
        grid = max(h for h, _ in shapes) * max(w for _, w in shapes)
        real += sum(counts)
        padded_tokens += longest * len(batch)
        padded_cells += grid * len(batch)
    return 1 - real / padded_tokens, 1 - real / padded_cells
