"""What a segmentation data set's classes are called and which colour each is drawn in.

Class names, in order of preference: a ``class_names.txt`` in the data root (one name per line,
as the synthetic ADE20K-format sets and users' own data in that layout carry), then the data
set's own ``class_names`` (ADE20K's 150, a folder data set's file). Colours: the data set's own
``palette`` when its names are the ones used (ADE20K's standard palette), else a fixed palette
of distinct colours.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.files import read_text_file

CLASS_NAMES_FILE = "class_names.txt"
GOLDEN_RATIO_CONJUGATE = 0.618033988749895


def read_root_class_names(root: str | Path) -> tuple[str, ...] | None:
    """The names in ``<root>/class_names.txt`` (blank lines dropped), or None when there is no such file."""
    path = Path(root) / CLASS_NAMES_FILE
    if not path.is_file():
        return None
    text = read_text_file(path, "class names file")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    return names or None


def dataset_class_names(dataset: Any, root: str | Path) -> tuple[str, ...] | None:
    """The class names of ``dataset`` (see the module docstring), or None when nothing names them."""
    from_root = read_root_class_names(root)
    if from_root is not None:
        return from_root
    names = getattr(dataset, "class_names", None)
    return tuple(names) if names else None


def names_for_table(class_names: tuple[str, ...] | None, num_classes: int) -> list[str]:
    """``num_classes`` display names: the given ones when there are exactly that many, else ``class <k>``."""
    if class_names is not None and len(class_names) == num_classes:
        return list(class_names)
    return [f"class {k}" for k in range(num_classes)]


def distinct_palette(count: int) -> np.ndarray:
    """``[count, 3]`` uint8 colours, none black: hues spaced by the golden ratio, three brightness levels."""
    colours = []
    for k in range(count):
        hue = (k * GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation, value = ((0.75, 0.95), (0.55, 0.75), (0.9, 0.6))[k % 3]
        red, green, blue = colorsys.hsv_to_rgb(hue, saturation, value)
        colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return np.asarray(colours, dtype=np.uint8).reshape(count, 3)


def dataset_palette(dataset: Any, root: str | Path, num_classes: int) -> np.ndarray:
    """``[num_classes, 3]`` uint8: the data set's ``palette`` when its own names apply, else :func:`distinct_palette`."""
    palette = getattr(dataset, "palette", None)
    own_names = read_root_class_names(root) is None
    if own_names and palette is not None and len(palette) >= num_classes:
        return np.asarray(palette, dtype=np.uint8)[:num_classes]
    return distinct_palette(num_classes)
