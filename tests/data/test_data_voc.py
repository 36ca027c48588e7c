"""Pascal VOC 2012 (VOC21 / VOC20): synthetic scenes in the VOCdevkit layout against mmseg's loading."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mmseg_reference import mmseg_load_seg_map
from PIL import Image

from siglip2_dense.data import PascalVOC20Dataset, PascalVOCDataset, SyntheticDataset
from siglip2_dense.data.image_io import read_label_map, write_rgb
from siglip2_dense.data.label_png import reduce_zero_label, write_palette_png
from siglip2_dense.data.write_pascal import write_voc
from siglip2_dense.errors import DataError, MissingFileError, RequestError

NUM, SEED, SIZE = 8, 5, (36, 52)


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory):
    return write_voc(tmp_path_factory.mktemp("voc"), NUM, SEED, SIZE)


def _boundary_by_loops(mask):
    """Object pixels with a 4-neighbour of another class, pixel by pixel."""
    height, width = mask.shape
    out = np.zeros(mask.shape, bool)
    for y in range(height):
        for x in range(width):
            if mask[y, x] == 0:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ny, nx = y + dy, x + dx
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] != mask[y, x]:
                    out[y, x] = True
    return out


def test_val_split_follows_the_split_file(voc_root):
    val = PascalVOCDataset(voc_root, "val")
    assert [p[0].name for p in val.pairs] == ["2012_000001.jpg", "2012_000005.jpg"]
    # scenes 2 and 6 are SBD-only (aug.txt), so VOC's own train / trainval lists leave them out
    assert len(PascalVOCDataset(voc_root, "train")) == 4 and len(PascalVOCDataset(voc_root, "trainval")) == 6


def test_train_aug_is_train_then_aug_with_sbd_labels_as_mmseg_reads_it(voc_root):
    dataset = PascalVOCDataset(voc_root, "train_aug")
    names = [(image.stem, label.parent.name) for image, label in dataset.pairs]
    assert names == [("2012_000000", "SegmentationClass"), ("2012_000003", "SegmentationClass"),
                     ("2012_000004", "SegmentationClass"), ("2012_000007", "SegmentationClass"),
                     ("2012_000002", "SegmentationClassAug"), ("2012_000006", "SegmentationClassAug")]
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    for position, index in ((0, 0), (4, 2), (5, 6)):
        item, truth = dataset[position], scenes[index]["mask"]
        np.testing.assert_array_equal(item["mask"], mmseg_load_seg_map(dataset.pairs[position][1]))
        if index in (2, 6):  # SBD's GTcls: the classes, no void band
            np.testing.assert_array_equal(item["mask"], truth)
        else:
            assert (item["mask"] == 255).any() and (item["mask"][item["mask"] != 255] == truth[item["mask"] != 255]).all()


def test_train_aug_without_the_sbd_files_names_them_and_the_converter(voc_root, tmp_path):
    root = shutil.copytree(voc_root, tmp_path / "VOC2012")
    (root / "ImageSets" / "Segmentation" / "aug.txt").unlink()
    with pytest.raises(DataError, match=r"missing: ImageSets/Segmentation/aug\.txt.*voc_aug\.py"):
        PascalVOCDataset(root, "train_aug")
    assert len(PascalVOCDataset(root, "train")) == 4


def test_labels_are_palette_png_indices(voc_root):
    with Image.open(voc_root / "SegmentationClass" / "2012_000001.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]  # class 1 (aeroplane) drawn dark red, as VOC's


@pytest.mark.parametrize("dataset_class,reduce", [(PascalVOCDataset, False), (PascalVOC20Dataset, True)])
def test_masks_equal_mmseg_loading(voc_root, dataset_class, reduce):
    for split in ("val", "train"):
        dataset = dataset_class(voc_root, split)
        for index in range(len(dataset)):
            expected = mmseg_load_seg_map(dataset.pairs[index][1], reduce_zero_label=reduce)
            np.testing.assert_array_equal(dataset[index]["mask"], expected)


def test_voc21_gives_the_scene_classes_with_void_boundaries(voc_root):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    for item, index in zip(PascalVOCDataset(voc_root, "val"), (1, 5)):
        truth = scenes[index]["mask"]
        void = _boundary_by_loops(truth)
        assert void.any()
        np.testing.assert_array_equal(item["mask"] == 255, void)
        np.testing.assert_array_equal(item["mask"][~void], truth[~void])
        assert np.abs(item["image"].astype(int) - scenes[index]["image"]).mean() < 4


def test_voc20_ignores_background_and_keeps_void_as_255(voc_root):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    item = PascalVOC20Dataset(voc_root, "val")[0]
    truth = scenes[1]["mask"]
    void = _boundary_by_loops(truth)
    np.testing.assert_array_equal(item["mask"] == 255, void | (truth == 0))
    keep = ~void & (truth > 0)
    np.testing.assert_array_equal(item["mask"][keep], truth[keep] - 1)
    assert not (item["mask"] == 254).any()


def test_reduce_zero_label_semantics():
    labels = np.array([[0, 1, 2], [20, 255, 0]], np.uint8)
    np.testing.assert_array_equal(reduce_zero_label(labels), [[255, 0, 1], [19, 255, 255]])


def test_class_names_and_palette():
    assert len(PascalVOCDataset.class_names) == 21 and len(PascalVOC20Dataset.class_names) == 20
    assert PascalVOCDataset.class_names[15] == "person" and PascalVOC20Dataset.class_names[14] == "person"
    assert PascalVOCDataset.class_names[-1] == "tvmonitor" and PascalVOC20Dataset.class_names[0] == "aeroplane"
    assert PascalVOCDataset.palette.shape == (21, 3) and PascalVOCDataset.palette[15].tolist() == [192, 128, 128]


def test_wrong_root_names_the_folder_found_expected_and_docs(voc_root):
    devkit = voc_root.parent
    with pytest.raises(DataError, match=r"holds \[VOC2012/\].*VOCdevkit/VOC2012.*host\.robots\.ox\.ac\.uk"):
        PascalVOCDataset(devkit, "val")


def test_unknown_split_names_the_choices(voc_root):
    with pytest.raises(RequestError, match="train, val, trainval, train_aug"):
        PascalVOCDataset(voc_root, "test")


@pytest.fixture
def voc_copy(voc_root, tmp_path):
    return shutil.copytree(voc_root, tmp_path / "VOC2012")


def test_rgb_label_png_is_refused(voc_copy):
    label = voc_copy / "SegmentationClass" / "2012_000001.png"
    write_rgb(label, np.zeros((*SIZE, 3), np.uint8))
    with pytest.raises(DataError, match="shape 36x52x3; expected a single-channel"):
        PascalVOCDataset(voc_copy, "val")[0]


def test_out_of_range_label_is_refused(voc_copy):
    label = voc_copy / "SegmentationClass" / "2012_000001.png"
    write_palette_png(label, np.full(SIZE, 30, np.uint8), PascalVOCDataset.palette)
    assert read_label_map(label)[0, 0] == 30
    with pytest.raises(DataError, match="value 30.*0..20 or 255"):
        PascalVOCDataset(voc_copy, "val")[0]


def test_split_file_naming_a_missing_image(voc_copy):
    (voc_copy / "JPEGImages" / "2012_000005.jpg").unlink()
    with pytest.raises(MissingFileError, match="2012_000005"):
        PascalVOCDataset(voc_copy, "val")
