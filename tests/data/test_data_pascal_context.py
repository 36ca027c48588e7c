"""Pascal Context (Context60 / Context59): synthetic scenes in the converted VOC2010 layout vs mmseg."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mmseg_reference import mmseg_load_seg_map
from PIL import Image

from siglip2_dense.data import PascalContext59Dataset, PascalContextDataset, SyntheticDataset
from siglip2_dense.data.image_io import write_png
from siglip2_dense.data.pascal_context import DETAIL_CLASS_IDS
from siglip2_dense.data.write_pascal import write_context
from siglip2_dense.errors import DataError

NUM, SEED, SIZE = 8, 11, (40, 48)


@pytest.fixture(scope="module")
def context_root(tmp_path_factory):
    return write_context(tmp_path_factory.mktemp("context"), NUM, SEED, SIZE)


def test_layout_and_split(context_root):
    with Image.open(context_root / "SegmentationClassContext" / "2008_000001.png") as image:
        assert image.mode == "L"  # the converter saves Image.fromarray(uint8)
    val = PascalContextDataset(context_root, "val")
    assert [p[0].name for p in val.pairs] == ["2008_000001.jpg", "2008_000005.jpg"]
    assert len(PascalContextDataset(context_root, "train")) == 6


@pytest.mark.parametrize("dataset_class,reduce", [(PascalContextDataset, False), (PascalContext59Dataset, True)])
def test_masks_equal_mmseg_loading(context_root, dataset_class, reduce):
    dataset = dataset_class(context_root, "val")
    for index in range(len(dataset)):
        expected = mmseg_load_seg_map(dataset.pairs[index][1], reduce_zero_label=reduce)
        np.testing.assert_array_equal(dataset[index]["mask"], expected)


def test_context60_gives_the_scene_classes_and_context59_ignores_background(context_root):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    truth = scenes[5]["mask"]
    np.testing.assert_array_equal(PascalContextDataset(context_root, "val")[1]["mask"], truth)
    reduced = PascalContext59Dataset(context_root, "val")[1]["mask"]
    expected = np.where(truth == 0, 255, truth.astype(int) - 1)
    np.testing.assert_array_equal(reduced, expected)


def test_class_names_follow_the_alphabetical_1x_order():
    names60, names59 = PascalContextDataset.class_names, PascalContext59Dataset.class_names
    assert len(names60) == 60 and len(names59) == 59 and len(DETAIL_CLASS_IDS) == 60
    # typed from mmseg 1.x pascal_context.py: 'background', 'aeroplane', 'bag', 'bed', ...; 'person' is 37
    assert names60[:4] == ("background", "aeroplane", "bag", "bed") and names60[37] == "person"
    assert names59[36] == "person" and names59[-1] == "wood"
    assert sorted(names59) == list(names59)  # the converter's sorted Detail ids give alphabetical order
    assert PascalContextDataset.palette.shape == (60, 3)


def test_value_60_is_refused(context_root, tmp_path):
    root = shutil.copytree(context_root, tmp_path / "VOC2010")
    write_png(root / "SegmentationClassContext" / "2008_000001.png", np.full(SIZE, 60, np.uint8))
    with pytest.raises(DataError, match="value 60.*0..59"):
        PascalContextDataset(root, "val")[0]


def test_voc2012_folder_without_context_annotations_is_named(tmp_path):
    root = tmp_path / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    with pytest.raises(DataError, match=r"SegmentationClassContext.*pascal_context\.py"):
        PascalContextDataset(root, "val")
