"""Colours for labels, chosen so that a label naming a colour is painted in that colour.

A label containing a colour word (``"yellow square"``, ``"red car"``, ``"grey road"``) gets that
colour's swatch; several labels naming one colour get lighter and darker shades of it. The other
labels take colours from ADE20K's palette (then golden-ratio hues), skipping any that would be read
as one of the named colours already in use, so "green square" and "yellow square" never trade colours.
"""

from __future__ import annotations

import colorsys
import json
import re
from collections.abc import Sequence
from importlib import resources

import numpy as np

# colour word -> RGB of that colour as a person names it
COLOUR_WORDS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 80, 230), "yellow": (245, 215, 20),
    "orange": (250, 140, 20), "purple": (140, 50, 190), "violet": (140, 50, 190), "pink": (250, 120, 190),
    "brown": (140, 85, 40), "black": (25, 25, 25), "white": (250, 250, 250), "grey": (128, 128, 128),
    "gray": (128, 128, 128), "cyan": (20, 210, 220), "magenta": (230, 30, 200), "turquoise": (40, 200, 180),
    "gold": (212, 175, 55), "silver": (192, 192, 192), "beige": (225, 205, 160), "navy": (20, 30, 110),
    "teal": (0, 128, 128), "maroon": (128, 0, 32), "olive": (128, 128, 0), "lime": (150, 230, 40),
}
_SHADES = (1.0, 0.7, 1.3, 0.5, 1.5)
_TOO_CLOSE = 90.0  # RGB distance under which a palette colour would pass for a named colour in use


def colour_word(label: str) -> str | None:
    """The first colour word in ``label``'s first synonym (whole words, any case), or None."""
    for word in re.findall(r"[a-z]+", label.split(",")[0].lower()):
        if word in COLOUR_WORDS:
            return word
    return None


def label_colours(labels: Sequence[str]) -> np.ndarray:
    """``[K, 3]`` uint8: one colour per label (see the module docstring)."""
    colours: list[tuple[int, int, int] | None] = [None] * len(labels)
    uses: dict[str, int] = {}
    for index, label in enumerate(labels):
        word = colour_word(label)
        if word is not None:
            shade = _SHADES[uses.get(word, 0) % len(_SHADES)]
            uses[word] = uses.get(word, 0) + 1
            colours[index] = _shaded(COLOUR_WORDS[word], shade)
    named = np.array([COLOUR_WORDS[word] for word in uses], dtype=np.float64).reshape(-1, 3)
    candidates = _palette_colours()
    for index in range(len(labels)):
        if colours[index] is not None:
            continue
        while True:
            candidate = next(candidates)
            if not len(named) or np.linalg.norm(named - np.asarray(candidate, float), axis=1).min() >= _TOO_CLOSE:
                break
        colours[index] = candidate
    return np.asarray(colours, dtype=np.uint8).reshape(len(labels), 3)


def _shaded(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    if factor <= 1.0:
        return tuple(int(round(c * factor)) for c in rgb)
    return tuple(int(round(c + (255 - c) * (factor - 1.0))) for c in rgb)


def _palette_colours():
    """ADE20K's 150 colours, then golden-ratio hues without end."""
    palette = json.loads(
        resources.files("siglip2_dense").joinpath("assets", "ade20k_150.json").read_text(encoding="utf-8")
    )["palette"]
    yield from (tuple(int(c) for c in colour) for colour in palette)
    index = 0
    while True:
        red, green, blue = colorsys.hsv_to_rgb((index * 0.618033988749895) % 1.0, 0.65, 0.95)
        yield int(red * 255), int(green * 255), int(blue * 255)
        index += 1
