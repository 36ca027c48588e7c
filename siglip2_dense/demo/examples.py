"""Example scenes for the demo checkpoint: held-out synthetic scenes as PNG files plus what is in them.

    python -m siglip2_dense.demo.examples assets/examples

The examples are held-out scenes (:func:`siglip2_dense.demo.data.held_out_scene_seed`) from index
:data:`FIRST_EXAMPLE_INDEX` on, far past the ones the tests and ``training.json`` measure; the
first ``count`` of them that show at least ``min_shapes`` different shape classes, each covering at
least ``min_share`` of the image, are written as ``scene_<index>.png`` at ``size x size``, with
``examples.json`` listing each file's seed, caption and classes (with their share of the pixels).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.data.synthetic import CLASS_NAMES, make_scene
from siglip2_dense.demo.data import held_out_scene_seed
from siglip2_dense.files import atomic_output, write_json

FIRST_EXAMPLE_INDEX = 100_000


def pick_examples(count: int = 3, size: int = 256, min_shapes: int = 3, min_share: float = 0.01) -> list[tuple[int, Any]]:
    """``(index, scene)`` of the first ``count`` held-out scenes from :data:`FIRST_EXAMPLE_INDEX` that
    show ``min_shapes`` shape classes, each on at least ``min_share`` of the pixels."""
    picked = []
    index = FIRST_EXAMPLE_INDEX
    while len(picked) < count:
        scene = make_scene(held_out_scene_seed(index), size, size)
        shares = np.bincount(scene.mask.ravel(), minlength=len(CLASS_NAMES)) / scene.mask.size
        if int((shares[1:] >= min_share).sum()) >= min_shapes:
            picked.append((index, scene))
        index += 1
    return picked


def write_examples(out: str | Path, count: int = 3, size: int = 256) -> list[dict[str, Any]]:
    """Write the picked scenes as PNG files and ``examples.json`` into ``out``; return the listing."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    listing = []
    for index, scene in pick_examples(count, size):
        name = f"scene_{index}.png"
        with atomic_output(out / name) as tmp:
            Image.fromarray(scene.image).save(tmp, format="PNG")
        shares = np.bincount(scene.mask.ravel(), minlength=len(CLASS_NAMES)) / scene.mask.size
        listing.append({
            "file": name,
            "seed": list(held_out_scene_seed(index)),
            "size": [size, size],
            "caption": scene.caption,
            "classes": {CLASS_NAMES[k]: round(float(shares[k]), 4) for k in scene.labels_present},
        })
    write_json(out / "examples.json", listing, indent=2)
    return listing


if __name__ == "__main__":
    print(json.dumps(write_examples(sys.argv[1] if len(sys.argv) > 1 else "assets/examples"), indent=2))
