"""ADE20KDataset: synthetic scenes written in the ADEChallengeData2016 layout read back exactly; bad inputs."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from siglip2_dense.data import ADE20KDataset, SyntheticDataset, ade20k_class_names, ade20k_palette
from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.label_png import reduce_zero_label
from siglip2_dense.data.write_formats import write_ade20k
from siglip2_dense.errors import DataError, MissingFileError, RequestError

NUM, SEED, SIZE = 8, 3, (40, 56)


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory):
    return write_ade20k(tmp_path_factory.mktemp("ade"), NUM, SEED, SIZE)


@pytest.fixture
def ade_copy(ade_root, tmp_path):
    """A private copy to damage."""
    return shutil.copytree(ade_root, tmp_path / "ADEChallengeData2016")


def test_splits_hold_the_expected_scenes(ade_root):
    train = ADE20KDataset(ade_root, "training")
    val = ADE20KDataset(ade_root, "validation")
    assert len(train) == 6 and len(val) == 2  # scenes 1 and 5 (index % 4 == 1) are validation
    assert [p[0].name for p in val.pairs] == ["ADE_val_00000001.jpg", "ADE_val_00000005.jpg"]


def test_labels_read_back_exactly_after_reduce_zero_label(ade_root):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    val = ADE20KDataset(ade_root, "validation")
    for item, index in zip(val, (1, 5)):
        scene = scenes[index]
        assert item["mask"].dtype == np.uint8 and item["mask"].shape == SIZE
        np.testing.assert_array_equal(item["mask"], scene["mask"])
        assert item["image"].dtype == np.uint8 and item["image"].shape == (*SIZE, 3)
        # JPEG is lossy but close; a wrong channel order or transposition would be far off
        assert np.abs(item["image"].astype(int) - scene["image"]).mean() < 4
        assert item["path"].endswith(f"ADE_val_{index:08d}.jpg")


def test_raw_labels_without_reduction(ade_root):
    item = ADE20KDataset(ade_root, "training", reduce_zero_label=False)[0]
    np.testing.assert_array_equal(item["mask"], SyntheticDataset(NUM, SEED, SIZE)[0]["mask"] + 1)


def test_reduce_zero_label_maps_zero_to_ignore_and_shifts_the_rest():
    labels = np.array([[0, 1, 2], [150, 0, 37]], np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(labels), [[255, 0, 1], [149, 255, 36]])


def mmseg_reduce_zero_label(labels: np.ndarray) -> np.ndarray:
    """mmsegmentation's LoadAnnotations (mmseg/datasets/transforms/loading.py), step by step on uint8."""
    seg = labels.copy()
    seg[seg == 0] = 255
    seg = seg - 1
    seg[seg == 254] = 255
    return seg


def test_reduce_zero_label_keeps_255_as_mmsegmentation_does():
    labels = np.array([[0, 1, 255], [150, 255, 0]], np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(labels), [[255, 0, 255], [149, 255, 255]])
    every_value = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(reduce_zero_label(every_value), mmseg_reduce_zero_label(every_value))


def test_annotated_ignore_pixels_stay_ignored(ade_copy):
    label_path = ade_copy / "annotations" / "training" / "ADE_train_00000000.png"
    labels = np.full(SIZE, 3, np.uint8)
    labels[:4] = 255
    write_png(label_path, labels)
    reduced = ADE20KDataset(ade_copy, "training")[0]["mask"]
    assert (reduced[:4] == 255).all() and (reduced[4:] == 2).all()
    raw = ADE20KDataset(ade_copy, "training", reduce_zero_label=False)[0]["mask"]
    np.testing.assert_array_equal(raw, labels)


def test_other_pixels_become_ignore(ade_copy):
    label_path = ade_copy / "annotations" / "training" / "ADE_train_00000000.png"
    labels = np.full(SIZE, 7, np.uint8)
    labels[:5] = 0
    write_png(label_path, labels)
    mask = ADE20KDataset(ade_copy, "training")[0]["mask"]
    assert (mask[:5] == 255).all() and (mask[5:] == 6).all()


def test_class_names_and_palette():
    names, palette = ade20k_class_names(), ade20k_palette()
    assert len(names) == 150 and names[:3] == ("wall", "building", "sky")
    assert palette.shape == (150, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [120, 120, 120]
    assert ADE20KDataset.class_names == names


def test_unknown_split_names_the_choices(ade_root):
    with pytest.raises(RequestError, match="training, validation"):
        ADE20KDataset(ade_root, "val")


def test_missing_annotation_names_both_files(ade_copy):
    label = ade_copy / "annotations" / "training" / "ADE_train_00000002.png"
    label.unlink()
    with pytest.raises(MissingFileError) as error:
        ADE20KDataset(ade_copy, "training")
    assert "ADE_train_00000002.jpg" in str(error.value) and str(label) in str(error.value)


def test_size_mismatch_names_both_files(ade_copy):
    write_png(ade_copy / "annotations" / "training" / "ADE_train_00000000.png", np.ones((10, 12), np.uint8))
    with pytest.raises(DataError, match=r"ADE_train_00000000\.jpg.*40x56.*ADE_train_00000000\.png.*10x12"):
        ADE20KDataset(ade_copy, "training")[0]


def test_label_above_150_is_reported(ade_copy):
    labels = np.ones(SIZE, np.uint8)
    labels[3, 4] = 151
    write_png(ade_copy / "annotations" / "training" / "ADE_train_00000000.png", labels)
    with pytest.raises(DataError, match=r"ADE_train_00000000\.png holds label 151.*0\.\.150.*or 255"):
        ADE20KDataset(ade_copy, "training")[0]


def test_colour_label_map_is_rejected(ade_copy):
    write_rgb(ade_copy / "annotations" / "training" / "ADE_train_00000000.png", np.ones((*SIZE, 3), np.uint8))
    with pytest.raises(DataError, match=r"ADE_train_00000000\.png.*single-channel 8-bit"):
        ADE20KDataset(ade_copy, "training")[0]


def test_empty_split_names_the_folder(ade_copy):
    for image in (ade_copy / "images" / "validation").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"no \.jpg images in .*images/validation"):
        ADE20KDataset(ade_copy, "validation")


def test_missing_folder_names_it(tmp_path):
    with pytest.raises(MissingFileError, match=r"images/training"):
        ADE20KDataset(tmp_path, "training")
