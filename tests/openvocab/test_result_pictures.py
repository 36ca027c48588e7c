"""Pictures of an open-vocabulary result that read without the code: a legend sized to the image that lists
every label (found or not), colours that agree with colour words, and label maps as palette PNGs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from siglip2_dense import OpenVocabResult
from siglip2_dense.openvocab.label_colours import COLOUR_WORDS, colour_word, label_colours
from siglip2_dense.picture_text import row_height

LABELS = ["background", "green square", "yellow square", "red circle", "triangle"]


def result_of(height: int, width: int, labels=LABELS, threshold: bool = False) -> OpenVocabResult:
    """Label 0 on the top half, 2 on the bottom-left quarter, 3 on the bottom-right; 1 and 4 nowhere."""
    label_map = torch.zeros(height, width, dtype=torch.long)
    label_map[height // 2 :, : width // 2] = 2
    label_map[height // 2 :, width // 2 :] = len(labels) if threshold else 3
    scores = torch.rand(len(labels), height, width)
    image = np.full((height, width, 3), 128, np.uint8)
    return OpenVocabResult(list(labels), scores, label_map, len(labels) if threshold else None, image)


def swatch_pixels(picture: np.ndarray, left: int, colour) -> int:
    return int((picture[:, left:] == np.asarray(colour, np.uint8)).all(axis=-1).sum())


@pytest.mark.parametrize("size", [(3000, 4000), (64, 64)])
def test_legend_is_sized_to_the_image_and_lists_every_label(size):
    height, width = size
    result = result_of(height, width)
    picture = np.asarray(result.overlay())
    row = row_height(height)
    assert row == (107 if height == 3000 else 14)
    assert picture.shape[1] > width + row and picture.shape[0] >= height
    colours = result.colours()
    for k in range(len(LABELS)):  # a swatch for every label, found or not, about row x row pixels
        assert swatch_pixels(picture, width, colours[k]) >= (row - 2 * (row // 14) - 2) ** 2, LABELS[k]
    texts = [text for text, _ in result.legend_entries()]
    assert texts == ["background  50.0%", "yellow square  25.0%", "red circle  25.0%",
                     "green square  0.0% not found", "triangle  0.0% not found"]


def test_legend_with_background_threshold_and_odd_text():
    result = result_of(40, 60, labels=["sky\nblue", "tree"], threshold=True)
    texts = [text for text, _ in result.legend_entries()]
    assert texts == ["sky\nblue  50.0%", "tree  0.0% not found", "background  50.0%"]
    result.overlay()  # a new line inside a label is drawn on one line, not an error


def test_colour_words_get_their_colour_and_other_labels_keep_clear_of_them():
    colours = label_colours(LABELS).astype(int)
    red, green, blue = colours[1]
    assert green > red + 60 and green > blue + 60  # "green square" is green
    red, green, blue = colours[2]
    assert red > 180 and green > 150 and blue < 100  # "yellow square" is yellow
    red, green, blue = colours[3]
    assert red > green + 100 and red > blue + 100  # "red circle" is red
    named = np.array([COLOUR_WORDS[w] for w in ("green", "yellow", "red")])
    for k in (0, 4):  # the others are no named colour in use
        assert np.linalg.norm(named - colours[k], axis=1).min() >= 90, LABELS[k]
    two_reds = label_colours(["red car", "red bus"])
    assert not np.array_equal(two_reds[0], two_reds[1])  # shades of red, told apart
    assert colour_word("Dark-Grey road, street") == "grey" and colour_word("redwood") is None


def test_label_map_is_a_palette_png_that_keeps_the_indices(tmp_path):
    result = result_of(30, 50, threshold=True)
    paths = result.save(tmp_path, stem="x")
    saved = Image.open(paths["label_map"])
    assert saved.mode == "P"
    indices = np.asarray(saved)
    np.testing.assert_array_equal(indices, result.label_map.numpy())
    palette = np.asarray(saved.getpalette()[: 3 * (len(LABELS) + 1)], np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette, result.colours())  # viewers show the overlay's colours
    np.testing.assert_array_equal(np.asarray(saved.convert("RGB")), result.colour_map())
