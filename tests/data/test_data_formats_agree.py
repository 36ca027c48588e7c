"""The same synthetic scenes written in every benchmark format give the same (image, label) pairs.

Each format's class mapping back to the synthetic classes is typed here from the writers' docstrings
(not imported), and each format's ignore pixels are checked to be exactly where the format puts them.
"""

from __future__ import annotations

import numpy as np
import pytest

from siglip2_dense.data import (
    ADE20KDataset,
    CityscapesDataset,
    COCOObjectDataset,
    COCOObjectInstancesDataset,
    COCOStuffDataset,
    PascalContext59Dataset,
    PascalContextDataset,
    PascalVOC20Dataset,
    PascalVOCDataset,
    SyntheticDataset,
)
from siglip2_dense.data.write_formats import write_synthetic

NUM, SEED, SIZE = 6, 9, (36, 44)
EVALUATION_SCENES = (1, 5)


def _stuff_to_synthetic(mask):
    out = mask.astype(int) + 1  # train id t (person ..) is shape t + 1
    out[mask == 161] = 0  # wall-other is the background
    return out


# format -> (loader given the written root, stored labels -> synthetic classes, ignore rule)
READERS = {
    "voc21": ("voc", lambda r: PascalVOCDataset(r, "val"), lambda m: m, "void"),
    "voc20": ("voc", lambda r: PascalVOC20Dataset(r, "val"), lambda m: m.astype(int) + 1, "void+background"),
    "context60": ("context", lambda r: PascalContextDataset(r, "val"), lambda m: m, "none"),
    "context59": ("context", lambda r: PascalContext59Dataset(r, "val"), lambda m: m.astype(int) + 1,
                  "background"),
    "cocostuff": ("cocostuff", lambda r: COCOStuffDataset(r, "val2017"), _stuff_to_synthetic, "none"),
    "cocostuff-raw": ("cocostuff", lambda r: COCOStuffDataset(r, "val2017", label_format="stuffthingmaps"),
                      _stuff_to_synthetic, "none"),
    "cocoobject-a": ("cocoobject", lambda r: COCOObjectDataset(r, "val2017"), lambda m: m, "none"),
    "cocoobject-b": ("cocoobject", lambda r: COCOObjectInstancesDataset(
        r / "images" / "val2017", r / "annotations" / "instances_val2017.json"), lambda m: m, "none"),
    "cityscapes": ("cityscapes", lambda r: CityscapesDataset(r, "val", "labelTrainIds"), lambda m: m, "none"),
    "cityscapes-ids": ("cityscapes", lambda r: CityscapesDataset(r, "val", "labelIds"), lambda m: m, "none"),
    "ade20k": ("ade20k", lambda r: ADE20KDataset(r, "validation"), lambda m: m, "none"),
}  # fmt: skip


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("formats")
    formats = {fmt for fmt, _, _, _ in READERS.values()}
    return {fmt: write_synthetic(fmt, out / fmt, NUM, SEED, SIZE) for fmt in formats}


def _void_band(mask):
    band = np.zeros(mask.shape, bool)
    padded = np.pad(mask, 1, mode="edge")
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        band |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] != mask
    return band & (mask > 0)


@pytest.mark.parametrize("reader", sorted(READERS))
def test_labels_map_back_to_the_scene(roots, reader):
    fmt, build, to_synthetic, ignore_rule = READERS[reader]
    dataset = build(roots[fmt])
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    assert len(dataset) == len(EVALUATION_SCENES)
    for position, index in enumerate(EVALUATION_SCENES):
        truth = scenes[index]["mask"]
        mask = dataset[position]["mask"]
        expected_ignore = np.zeros(truth.shape, bool)
        if "void" in ignore_rule:
            expected_ignore |= _void_band(truth)
        if "background" in ignore_rule:
            expected_ignore |= truth == 0
        np.testing.assert_array_equal(mask == 255, expected_ignore)
        np.testing.assert_array_equal(np.asarray(to_synthetic(mask))[~expected_ignore], truth[~expected_ignore])


def test_images_are_the_same_in_every_format(roots):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    images = {reader: READERS[reader][1](roots[READERS[reader][0]])[1]["image"] for reader in READERS}
    jpeg = images["ade20k"]
    for image in images.values():
        # the same JPEG encoder and settings everywhere; Cityscapes' PNGs store the JPEG-decoded pixels
        np.testing.assert_array_equal(image, jpeg)
    assert np.abs(jpeg.astype(int) - scenes[5]["image"]).mean() < 4
