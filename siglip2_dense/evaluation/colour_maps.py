"""Perceptual colour maps without matplotlib: viridis and turbo as 256-entry lookup tables.

Each table is evaluated once from a published polynomial fit of the original map and then indexed,
so colouring an image is one table look-up:

- viridis (perceptually uniform, colour-blind safe; the default): Matt Zucker's degree-6 fit
  (shadertoy WlfXRN, CC0), within about 4/255 of matplotlib's table;
- turbo (rainbow-like, more contrast): the degree-5 fit published with the map by Google
  (Anton Mikhailov, Ruofei Du; Apache-2.0), close in the middle, up to about 25/255 off at the
  dark-red end.
"""

from __future__ import annotations

import functools

import numpy as np

from siglip2_dense.errors import RequestError

COLOUR_MAPS = ("viridis", "turbo")
TABLE_SIZE = 256

# c0 + t * (c1 + t * (c2 + ...)): one row per power of t, columns red, green, blue
_VIRIDIS = np.array([
    [0.2777273272234177, 0.005407344544966578, 0.3340998053353061],
    [0.1050930431085774, 1.404613529898575, 1.384590162594685],
    [-0.3308618287255563, 0.214847559468213, 0.09509516302823659],
    [-4.634230498983486, -5.799100973351585, -19.33244095627987],
    [6.228269936347081, 14.17993336680509, 56.69055260068105],
    [4.776384997670288, -13.74514537774601, -65.35303263337234],
    [-5.435455855934631, 4.645852612178535, 26.3124352495832],
])
_TURBO = np.array([
    [0.13572138, 0.09140261, 0.10667330],
    [4.61539260, 2.19418839, 12.64194608],
    [-42.66032258, 4.84296658, -60.58204836],
    [132.13108234, -14.18503333, 110.36276771],
    [-152.94239396, 4.27729857, -89.90310912],
    [59.28637943, 2.82956604, 27.34824973],
])
_COEFFICIENTS = {"viridis": _VIRIDIS, "turbo": _TURBO}


@functools.cache
def colour_table(name: str = "viridis") -> np.ndarray:
    """``[256, 3]`` uint8 RGB: entry ``i`` is the map's colour at ``t = i / 255``.

    Raises:
        RequestError: ``name`` is not one of :data:`COLOUR_MAPS`.
    """
    if name not in _COEFFICIENTS:
        raise RequestError(f"unknown colour map {name!r}; valid choices: {', '.join(COLOUR_MAPS)}")
    t = np.linspace(0.0, 1.0, TABLE_SIZE)[:, None]
    rgb = np.zeros((TABLE_SIZE, 3))
    for row in _COEFFICIENTS[name][::-1]:  # Horner's scheme
        rgb = rgb * t + row
    table = np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    table.flags.writeable = False
    return table


def apply_colour_map(
    values: np.ndarray,
    low: float,
    high: float,
    name: str = "viridis",
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Colour ``[H, W]`` values: ``low`` -> the map's first colour, ``high`` -> its last (clipped between).

    Args:
        values: ``[H, W]`` numbers (NaN allowed where ``valid`` is False).
        low, high: the values at the two ends of the map; ``high <= low`` maps everything to the middle.
        name: one of :data:`COLOUR_MAPS`.
        valid: optional ``[H, W]`` bool; pixels where it is False are black.

    Returns:
        ``[H, W, 3]`` uint8 RGB.
    """
    table = colour_table(name)
    values = np.asarray(values, dtype=np.float64)
    if high > low:
        scaled = (values - low) / (high - low)
    else:
        scaled = np.full(values.shape, 0.5)
    indices = np.round(np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0) * (TABLE_SIZE - 1)).astype(np.intp)
    rgb = table[indices]
    if valid is not None:
        rgb[~np.asarray(valid, dtype=bool)] = 0
    return rgb
