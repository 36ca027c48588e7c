"""FolderSegmentationDataset: a user's own images + label PNGs + class names, matched by stem."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from siglip2_dense.data import SYNTHETIC_CLASS_NAMES, FolderSegmentationDataset, SyntheticDataset
from siglip2_dense.data.folder import read_class_names
from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.write_formats import write_folder
from siglip2_dense.errors import DataError, MissingFileError, RequestError

NUM, SEED, SIZE = 4, 11, (30, 44)


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("folder"), NUM, SEED, SIZE)


@pytest.fixture
def folder_copy(folder_root, tmp_path):
    return shutil.copytree(folder_root, tmp_path / "mine")


def open_folder(root, **kwargs):
    return FolderSegmentationDataset(root / "images", root / "masks", root / "class_names.txt", **kwargs)


def test_reads_back_exactly(folder_root):
    data, scenes = open_folder(folder_root), SyntheticDataset(NUM, SEED, SIZE)
    assert len(data) == NUM and data.class_names == SYNTHETIC_CLASS_NAMES
    for index in range(NUM):
        np.testing.assert_array_equal(data[index]["image"], scenes[index]["image"])  # PNG: lossless
        np.testing.assert_array_equal(data[index]["mask"], scenes[index]["mask"])
        assert data[index]["path"].endswith(f"{index:05d}.png")


def test_ignore_label_is_kept_and_other_formats_match_by_stem(folder_copy):
    (folder_copy / "images" / "00000.png").unlink()
    write_rgb(folder_copy / "images" / "00000.jpg", np.full((*SIZE, 3), 90, np.uint8))
    mask = np.zeros(SIZE, np.uint8)
    mask[0, :3] = 255
    write_png(folder_copy / "masks" / "00000.png", mask)
    item = open_folder(folder_copy)[0]
    assert item["path"].endswith("00000.jpg") and item["mask"][0, :4].tolist() == [255, 255, 255, 0]


def test_label_beyond_the_classes_is_reported(folder_copy):
    mask = np.zeros(SIZE, np.uint8)
    mask[5, 5] = 17  # 17 classes: 0..16
    write_png(folder_copy / "masks" / "00001.png", mask)
    with pytest.raises(DataError, match=r"00001\.png holds label 17; expected 0\.\.16.*or 255"):
        open_folder(folder_copy)[1]


def test_missing_mask_names_both_files(folder_copy):
    (folder_copy / "masks" / "00002.png").unlink()
    with pytest.raises(MissingFileError, match=r"images/00002\.png has no mask: expected .*masks/00002\.png"):
        open_folder(folder_copy)


def test_size_mismatch_names_both_files(folder_copy):
    write_png(folder_copy / "masks" / "00003.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match=r"images/00003\.png is 30x44 but mask .*masks/00003\.png is 3x3"):
        open_folder(folder_copy)[3]


def test_class_names_file(tmp_path):
    (tmp_path / "names.txt").write_text("  sky \n\nroad\n")
    assert read_class_names(tmp_path / "names.txt") == ("sky", "road")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="empty.txt is empty"):
        read_class_names(tmp_path / "empty.txt")
    with pytest.raises(MissingFileError, match="absent.txt"):
        read_class_names(tmp_path / "absent.txt")


def test_ignore_index_that_is_a_class_is_refused(folder_root):
    with pytest.raises(RequestError, match=r"ignore_index=3 is also a class index \('red triangle'\)"):
        open_folder(folder_root, ignore_index=3)


def test_empty_image_folder_is_named(folder_copy):
    shutil.rmtree(folder_copy / "images")
    (folder_copy / "images").mkdir()
    with pytest.raises(DataError, match=r"no images .* in .*mine/images"):
        open_folder(folder_copy)


def test_duplicate_stems_are_refused(folder_copy):
    write_rgb(folder_copy / "images" / "00001.jpg", np.zeros((*SIZE, 3), np.uint8))
    with pytest.raises(DataError, match="stem '00001'"):
        open_folder(folder_copy)
