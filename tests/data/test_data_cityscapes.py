"""Cityscapes: synthetic scenes in the leftImg8bit / gtFine layout vs mmseg; labelIds mapped in the loader."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mmseg_reference import mmseg_load_seg_map, mmseg_scan

from siglip2_dense.data import CityscapesDataset, SyntheticDataset
from siglip2_dense.data.image_io import read_rgb, write_png, write_rgb
from siglip2_dense.data.write_cityscapes import write_cityscapes
from siglip2_dense.errors import DataError, RequestError

NUM, SEED, SIZE = 8, 4, (32, 64)
# typed from cityscapesscripts labels.py (name, id, trainId) for ids 0..33
TRAIN_ID_OF = [255] * 7 + [0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
                           255, 255, 16, 17, 18]


@pytest.fixture(scope="module")
def city_root(tmp_path_factory):
    return write_cityscapes(tmp_path_factory.mktemp("city"), NUM, SEED, SIZE)


def test_scan_and_labels_match_mmseg(city_root):
    dataset = CityscapesDataset(city_root, "val", label_file="labelTrainIds")
    expected = mmseg_scan(city_root / "leftImg8bit" / "val", "_leftImg8bit.png", city_root / "gtFine" / "val",
                          "_gtFine_labelTrainIds.png")
    assert [(str(i), str(label)) for i, label in dataset.pairs] == expected
    assert [p[0].parent.name for p in dataset.pairs] == ["frankfurt", "lindau"]
    for index in range(len(dataset)):
        np.testing.assert_array_equal(dataset[index]["mask"], mmseg_load_seg_map(expected[index][1]))


def test_label_ids_map_to_the_same_train_ids(city_root, tmp_path):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    train_ids = CityscapesDataset(city_root, "val", label_file="labelTrainIds")
    label_ids = CityscapesDataset(city_root, "val", label_file="labelIds")
    for position, index in enumerate((1, 5)):
        np.testing.assert_array_equal(train_ids[position]["mask"], scenes[index]["mask"])
        np.testing.assert_array_equal(label_ids[position]["mask"], scenes[index]["mask"])
        # the PNG holds the pixels a JPEG layout gives for the scene: write_rgb to .jpg, read back
        write_rgb(tmp_path / f"{index}.jpg", scenes[index]["image"])
        np.testing.assert_array_equal(train_ids[position]["image"], read_rgb(tmp_path / f"{index}.jpg"))
        assert train_ids[position]["path"].endswith("_leftImg8bit.png")


def test_every_label_id_maps_as_cityscapesscripts_says(city_root, tmp_path):
    root = shutil.copytree(city_root, tmp_path / "cityscapes")
    label = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000001_gtFine_labelIds.png"
    ids = np.resize(np.arange(34, dtype=np.uint8), SIZE[0] * SIZE[1]).reshape(SIZE)
    write_png(label, ids)
    mask = CityscapesDataset(root, "val", label_file="labelIds")[0]["mask"]
    np.testing.assert_array_equal(mask, np.array(TRAIN_ID_OF, np.uint8)[ids])


def test_auto_picks_label_ids_when_train_ids_are_absent(city_root, tmp_path):
    root = shutil.copytree(city_root, tmp_path / "cityscapes")
    assert CityscapesDataset(root, "val").label_file == "labelTrainIds"
    for path in (root / "gtFine").rglob("*_labelTrainIds.png"):
        path.unlink()
    dataset = CityscapesDataset(root, "val")
    assert dataset.label_file == "labelIds"
    np.testing.assert_array_equal(dataset[1]["mask"], SyntheticDataset(NUM, SEED, SIZE)[5]["mask"])


def test_label_id_above_33_and_train_id_above_18_are_refused(city_root, tmp_path):
    root = shutil.copytree(city_root, tmp_path / "cityscapes")
    stem = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000001_gtFine_"
    write_png(f"{stem}labelIds.png", np.full(SIZE, 34, np.uint8))
    write_png(f"{stem}labelTrainIds.png", np.full(SIZE, 19, np.uint8))
    with pytest.raises(DataError, match="value 34.*0..33"):
        CityscapesDataset(root, "val", label_file="labelIds")[0]
    with pytest.raises(DataError, match="value 19.*0..18"):
        CityscapesDataset(root, "val", label_file="labelTrainIds")[0]


def test_wrong_root_and_choices(city_root):
    with pytest.raises(DataError, match=r"leftImg8bit/val.*cityscapes-dataset\.com"):
        CityscapesDataset(city_root / "gtFine", "val")
    with pytest.raises(RequestError, match="labelTrainIds, labelIds, auto"):
        CityscapesDataset(city_root, "val", label_file="trainIds")
    assert len(CityscapesDataset.class_names) == 19 and CityscapesDataset.class_names[11] == "person"
