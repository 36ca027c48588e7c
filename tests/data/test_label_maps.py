"""Label maps in palette PNGs (Pascal VOC / Pascal Context) read as the indices they store, as mmsegmentation reads them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from siglip2_dense.data import ADE20KDataset, FolderSegmentationDataset
from siglip2_dense.data.image_io import read_label_map, write_png
from siglip2_dense.data.write_formats import write_ade20k, write_folder
from siglip2_dense.errors import DataError

SIZE = (30, 44)


def voc_colour_map(count: int = 256) -> np.ndarray:
    """Pascal VOC's label colour map (devkit ``VOClabelcolormap.m``): the bits of k spread over R, G, B."""
    colours = np.zeros((count, 3), np.uint8)
    for k in range(count):
        value, red, green, blue = k, 0, 0, 0
        for shift in range(7, -1, -1):
            red |= (value & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[k] = red, green, blue
    return colours


def write_palette_png(path, labels: np.ndarray, bits: int = 8) -> None:
    """``labels [H, W]`` uint8 as a palette PNG with VOC's colours (PIL, as VOC's SegmentationClass files)."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette(voc_colour_map(2 ** bits).reshape(-1).tolist())
    image.save(path, bits=bits)


def voc_like_labels(seed: int = 0) -> np.ndarray:
    """Classes 0..20 in blocks with a 255 ("void") border between them, as VOC's label maps draw it."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.repeat(rng.integers(0, 21, size=(3, 4)), 10, axis=0), 11, axis=1).astype(np.uint8)
    labels[::10] = 255
    labels[:, ::11] = 255
    return labels


def test_palette_png_gives_the_stored_indices_not_colours(tmp_path):
    labels = voc_like_labels()
    write_palette_png(tmp_path / "voc.png", labels)
    assert Image.open(tmp_path / "voc.png").mode == "P"
    got = read_label_map(tmp_path / "voc.png")
    assert got.dtype == np.uint8 and got.shape == SIZE
    np.testing.assert_array_equal(got, labels)
    # mmcv's pillow backend with flag="unchanged" (mmsegmentation's LoadAnnotations): np.array of the PIL image
    np.testing.assert_array_equal(got, np.array(Image.open(tmp_path / "voc.png")))


def test_grey_and_palette_pngs_of_the_same_labels_read_the_same(tmp_path):
    labels = voc_like_labels(seed=1)
    write_png(tmp_path / "grey.png", labels)
    write_palette_png(tmp_path / "palette.png", labels)
    np.testing.assert_array_equal(read_label_map(tmp_path / "palette.png"), read_label_map(tmp_path / "grey.png"))


def test_four_bit_palette_png_gives_its_indices(tmp_path):
    labels = (np.arange(SIZE[0] * SIZE[1]) % 16).astype(np.uint8).reshape(SIZE)
    write_palette_png(tmp_path / "four_bit.png", labels, bits=4)
    np.testing.assert_array_equal(read_label_map(tmp_path / "four_bit.png"), labels)


def test_truncated_palette_png_is_reported(tmp_path):
    write_palette_png(tmp_path / "whole.png", voc_like_labels())
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png"):
        read_label_map(tmp_path / "cut.png")


def test_folder_data_set_with_palette_masks_equals_grey_masks(tmp_path):
    grey_root = write_folder(tmp_path / "grey", 3, 5, SIZE)
    palette_root = shutil.copytree(grey_root, tmp_path / "palette")
    for mask_path in sorted((palette_root / "masks").iterdir()):
        write_palette_png(mask_path, read_label_map(mask_path))

    def open_folder(root):
        return FolderSegmentationDataset(root / "images", root / "masks", root / "class_names.txt")

    grey, palette = open_folder(grey_root), open_folder(palette_root)
    for index in range(3):
        np.testing.assert_array_equal(palette[index]["mask"], grey[index]["mask"])


def test_ade20k_palette_annotation_is_reduced_like_the_grey_one(tmp_path):
    root = write_ade20k(tmp_path / "ade", 4, 2, SIZE)
    label_path = root / "annotations" / "training" / "ADE_train_00000000.png"
    expected = ADE20KDataset(root, "training")[0]["mask"]
    write_palette_png(label_path, read_label_map(label_path))
    np.testing.assert_array_equal(ADE20KDataset(root, "training")[0]["mask"], expected)
