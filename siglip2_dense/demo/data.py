"""Training and held-out scenes for the demo model, rendered once into memory.

Seeds. Training scene ``i`` of a run seeded ``seed`` is ``make_scene((SCENE_SEED_TAG, seed, i))``;
held-out scene ``i`` is ``make_scene((SCENE_SEED_TAG, HELD_OUT_SEED, i))``. Training seeds must be
below ``HELD_OUT_SEED``, so the two sets never share a seed, and the three-number seeds never
equal the two-number ``scene_seed(s, i)`` of :class:`~siglip2_dense.data.synthetic.SyntheticDataset`
(for ``i > 0``), so the toolkit's synthetic data sets do not reuse them either.

A :class:`ScenePool` holds every scene at ``size`` (128x128 by default) and, for the NaFlex
low-resolution steps, the same images at half size, resized exactly as ``Siglip2ImageProcessor``
resizes (torchvision bilinear with antialiasing on uint8). :func:`patchify` then turns images
into the processor's ``pixel_values`` bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from siglip2_dense.data.synthetic import NUM_CLASSES, make_scene
from siglip2_dense.errors import RequestError
from siglip2_dense.text.prompts import canonicalize_text

SCENE_SEED_TAG = 20_260_008
HELD_OUT_SEED = 1_000_000
PRESENCE_MIN_PIXELS = 4  # a class counts as present (for the image-level loss) from this many pixels


def training_scene_seed(seed: int, index: int) -> tuple[int, int, int]:
    """The seed of training scene ``index`` of a run seeded ``seed`` (``0 <= seed < HELD_OUT_SEED``)."""
    if not 0 <= seed < HELD_OUT_SEED:
        raise RequestError(f"seed={seed}: training seeds are 0 <= seed < {HELD_OUT_SEED} (held-out scenes use it)")
    return (SCENE_SEED_TAG, seed, index)


def held_out_scene_seed(index: int) -> tuple[int, int, int]:
    """The seed of held-out scene ``index``: never used for training."""
    return (SCENE_SEED_TAG, HELD_OUT_SEED, index)


@dataclass
class ScenePool:
    """Scenes in memory, as tensors (S the full size, g = S / patch_size the full grid).

    Attributes:
        images: ``[N, 3, S, S]`` uint8 at the full size.
        images_half: ``[N, 3, S/2, S/2]`` uint8, resized as the NaFlex processor does.
        fractions: ``[N, K, g, g]`` float16, each class's share of each full-size patch.
        fractions_half: ``[N, K, g/2, g/2]`` float16, the same for the half-size patches.
        presence: ``[N, K]`` bool, class k covers at least ``PRESENCE_MIN_PIXELS`` pixels.
        captions: N canonical captions (lowercase, no punctuation), as the text tower reads text.
    """

    images: torch.Tensor
    images_half: torch.Tensor
    fractions: torch.Tensor
    fractions_half: torch.Tensor
    presence: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


def render_pool(seeds: list[tuple[int, ...]], size: int = 128, patch_size: int = 8, chunk: int = 256) -> ScenePool:
    """Render the scenes of ``seeds`` at ``size x size`` into a :class:`ScenePool` (``chunk`` at a time)."""
    import torchvision.transforms.v2.functional as TF

    if size % (2 * patch_size):
        raise RequestError(f"size={size}: expected a multiple of {2 * patch_size} (two grids of patch {patch_size})")
    grid = size // patch_size
    parts: dict[str, list] = {"images": [], "fractions": [], "fractions_half": [], "presence": [], "captions": []}
    for start in range(0, len(seeds), chunk):
        scenes = [make_scene(seed, size, size) for seed in seeds[start : start + chunk]]
        masks = torch.from_numpy(np.stack([s.mask for s in scenes]))
        parts["images"].append(torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2))
        parts["fractions"].append(class_fractions(masks, grid).half())
        parts["fractions_half"].append(class_fractions(masks, grid // 2).half())
        pixels = torch.stack([torch.bincount(m.flatten().long(), minlength=NUM_CLASSES) for m in masks])
        parts["presence"].append(pixels >= PRESENCE_MIN_PIXELS)
        parts["captions"] += [canonicalize_text(s.caption) for s in scenes]
    images = torch.cat(parts["images"]).contiguous()
    return ScenePool(
        images=images,
        images_half=TF.resize(images, [size // 2, size // 2], antialias=True),
        fractions=torch.cat(parts["fractions"]),
        fractions_half=torch.cat(parts["fractions_half"]),
        presence=torch.cat(parts["presence"]),
        captions=parts["captions"],
    )


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``Siglip2ImageProcessor``'s pixel values of images already at a multiple of the patch size.

    Args:
        images: ``[B, 3, H, W]`` uint8.

    Returns:
        ``[B, (H/p)*(W/p), p*p*3]`` float32 in [-1, 1]: row-major patches, each flattened (row, col, channel).
    """
    batch, channels, height, width = images.shape
    p = patch_size
    x = images.float() / 127.5 - 1.0
    x = x.reshape(batch, channels, height // p, p, width // p, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(batch, (height // p) * (width // p), p * p * channels)


def class_fractions(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """The share of each class in each cell of a ``grid x grid`` patch grid.

    Args:
        masks: ``[B, S, S]`` uint8 class indices, ``S`` a multiple of ``grid``.

    Returns:
        ``[B, K, grid, grid]`` float32, summing to 1 over K.
    """
    batch, size = masks.shape[0], masks.shape[-1]
    cell = size // grid
    rows = torch.arange(size) // cell
    cells = (rows[:, None] * grid + rows[None, :]).flatten()  # [S*S], the cell of each pixel
    flat = (torch.arange(batch)[:, None] * grid * grid + cells[None, :]) * NUM_CLASSES + masks.reshape(batch, -1).long()
    counts = torch.bincount(flat.flatten(), minlength=batch * grid * grid * NUM_CLASSES)
    counts = counts.reshape(batch, grid, grid, NUM_CLASSES).permute(0, 3, 1, 2)
    return counts.float() / (cell * cell)
