"""Text on pictures, sized to the picture: legends (colour swatch + line) and titles.

Used by the open-vocabulary overlay (:mod:`siglip2_dense.openvocab.result`) and the evaluation pictures
(:mod:`siglip2_dense.evaluation.pictures`). The text height follows the picture's height
(:func:`row_height`: 1/28 of it, at least 14 pixels), so a legend stays readable on a 4000x3000 photo and
on a 64x64 crop alike; the canvas grows when the legend is taller than the picture. Pillow's bundled
FreeType font (any size, Latin and most accented letters) is used; without FreeType, its bitmap font.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

MIN_ROW = 14
ROWS_PER_HEIGHT = 28
WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (110, 110, 110)

LegendEntry = tuple[str, tuple[int, int, int]]  # (text, swatch colour); a None colour draws no swatch


def row_height(picture_height: int) -> int:
    """Pixels per text row for a picture ``picture_height`` pixels tall."""
    return max(MIN_ROW, round(picture_height / ROWS_PER_HEIGHT))


@functools.cache
def font_of(size: int) -> Any:
    """A font whose text is about ``size`` pixels tall (FreeType when Pillow has it, else the bitmap font)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def drawable(text: str, font: Any) -> str:
    """``text`` on one line, in characters ``font`` can draw (others become ``?``)."""
    text = " ".join(text.split())
    try:
        font.getbbox(text)
    except UnicodeEncodeError:
        return text.encode("ascii", "replace").decode("ascii")
    return text


def legend_panel(entries: Sequence[LegendEntry], row: int, min_height: int = 0) -> Image.Image:
    """A white panel listing ``entries`` one per row: a ``row``-sized swatch, then the text.

    Returns:
        an RGB image ``max(min_height, rows * row * 1.25 + margins)`` pixels tall.
    """
    font = font_of(int(row * 0.8))
    pad = max(2, row // 4)
    step = row + pad
    lines = [drawable(text, font) for text, _ in entries]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((int(measure.textlength(line, font=font)) for line in lines), default=0)
    width = pad + row + pad + text_width + 2 * pad
    height = max(min_height, pad + step * len(entries) + pad)
    panel = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(panel)
    for index, ((_, colour), line) in enumerate(zip(entries, lines)):
        top = pad + index * step
        if colour is not None:
            draw.rectangle([pad, top, pad + row - 1, top + row - 1], fill=tuple(colour), outline=BLACK,
                           width=max(1, row // 14))
        _text(draw, (2 * pad + row, top + row // 2), line, font, row)
    return panel


def scale_labels(labels: Sequence[tuple[int, str]], height: int, row: int) -> Image.Image:
    """A white strip ``height`` pixels tall with each ``(y, text)`` drawn so that its middle is at row ``y``
    after a short tick mark (the labels of a colour bar)."""
    font = font_of(int(row * 0.8))
    pad = max(2, row // 4)
    lines = [(min(max(y, row // 2), height - 1 - row // 2), drawable(text, font)) for y, text in labels]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max((int(measure.textlength(line, font=font)) for _, line in lines), default=0)
    strip = Image.new("RGB", (3 * pad + text_width + pad, height), WHITE)
    draw = ImageDraw.Draw(strip)
    for (y, _), (middle, line) in zip(labels, lines):
        draw.line([(0, y), (pad, y)], fill=BLACK, width=max(1, row // 14))
        _text(draw, (2 * pad, middle), line, font, row)
    return strip


def beside(picture: Image.Image, panel: Image.Image) -> Image.Image:
    """``picture`` with ``panel`` on its right, on a white canvas as tall as the taller of the two."""
    canvas = Image.new("RGB", (picture.width + panel.width, max(picture.height, panel.height)), WHITE)
    canvas.paste(picture, (0, 0))
    canvas.paste(panel, (picture.width, 0))
    return canvas


def with_title(picture: Image.Image, title: str, row: int) -> Image.Image:
    """``picture`` under a white strip holding ``title`` (one line, ``row`` pixels of text)."""
    font = font_of(int(row * 0.8))
    pad = max(2, row // 4)
    line = drawable(title, font)
    width = max(picture.width, int(ImageDraw.Draw(picture).textlength(line, font=font)) + 2 * pad)
    canvas = Image.new("RGB", (width, picture.height + row + 2 * pad), WHITE)
    _text(ImageDraw.Draw(canvas), (pad, pad + row // 2), line, font, row)
    canvas.paste(picture, (0, row + 2 * pad))
    return canvas


def _text(draw: ImageDraw.ImageDraw, left_middle: tuple[int, int], line: str, font: Any, row: int) -> None:
    """Draw ``line`` in black with its left edge and vertical middle at ``left_middle``."""
    if isinstance(font, ImageFont.FreeTypeFont):
        draw.text(left_middle, line, fill=BLACK, font=font, anchor="lm")
    else:  # the bitmap font has no anchors: place its top-left corner
        draw.text((left_middle[0], left_middle[1] - row // 3), line, fill=BLACK, font=font)
