"""ADE-847 and Pascal Context 459 in the layouts of CAT-Seg's preparation scripts (16-bit TIFF label maps).

The class mappings of the synthetic writer are typed here from ``write_catseg.py``'s docstring, not imported;
the class names at fixed positions are typed by hand from CAT-Seg (github.com/cvlab-kaist/CAT-Seg at 6d3a188)
``datasets/ade847.json`` / ``prepare_ade20k_full.py`` and ``datasets/pc459.json`` / ``register_pascal_context.py``.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from siglip2_dense.data import ADE20KFullDataset, PascalContext459Dataset, SyntheticDataset, write_synthetic
from siglip2_dense.data.label_tiff import write_label_tiff
from siglip2_dense.errors import DataError, MissingFileError, RequestError
from siglip2_dense.evaluation import SegmentationEvaluator
from siglip2_dense.evaluation.loop import evaluate_images

NUM, SEED, SIZE = 6, 9, (36, 44)
EVALUATION_SCENES = (1, 5)
IGNORE = 65535


def _void_band(mask):
    band = np.zeros(mask.shape, bool)
    padded = np.pad(mask, 1, mode="edge")
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        band |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] != mask
    return band & (mask > 0)


# format -> (loader, synthetic class -> stored value, pixels written as ignore)
LAYOUTS = {
    "ade847": (ADE20KFullDataset, lambda k: 50 * k + 5, _void_band),
    "context459": (PascalContext459Dataset, lambda k: 27 * k + 12, lambda m: np.zeros(m.shape, bool)),
}


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    out = tmp_path_factory.mktemp("catseg")
    return {fmt: write_synthetic(fmt, out / fmt, NUM, SEED, SIZE) for fmt in LAYOUTS}


def test_files_are_where_and_what_catseg_writes(roots):
    ade = roots["ade847"]
    assert ade.name == "ADE20K_2021_17_01"
    label = ade / "annotations_detectron2" / "validation" / "ADE_val_00000001.tif"
    assert (ade / "images_detectron2" / "validation" / "ADE_val_00000001.jpg").is_file()
    with Image.open(label) as image:
        assert (image.format, image.mode) == ("TIFF", "I;16")  # Image.fromarray(uint16).save(...)
    context = roots["context459"]
    assert context.parts[-2:] == ("VOCdevkit", "VOC2010")
    assert len(list((context / "JPEGImages").glob("*.jpg"))) == NUM  # all images; labels only for val
    assert sorted(p.name for p in (context / "annotations_detectron2" / "pc459_val").iterdir()) == [
        "2008_000001.tif", "2008_000005.tif"]
    assert (context / "pascalcontext_val.txt").read_text() == "2008_000001\n2008_000005\n"


@pytest.mark.parametrize("fmt", sorted(LAYOUTS))
def test_every_layout_gives_the_synthetic_ground_truth(roots, fmt):
    dataset_class, to_stored, ignored = LAYOUTS[fmt]
    dataset = dataset_class(roots[fmt])
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    assert len(dataset) == len(EVALUATION_SCENES) and dataset.ignore_index == IGNORE
    for position, index in enumerate(EVALUATION_SCENES):
        truth, item = scenes[index]["mask"], dataset[position]
        assert item["mask"].dtype == np.uint16 and item["image"].shape == (*SIZE, 3)
        expected = to_stored(truth.astype(np.int64))
        expected[ignored(truth)] = IGNORE
        np.testing.assert_array_equal(item["mask"], expected)
    assert (expected >= 255).any()  # the mapping reaches past uint8


def _one_image(tmp_path, dataset_class, labels):
    """A copy of the written layout whose first label map is ``labels`` (uint16, SIZE)."""
    if dataset_class is ADE20KFullDataset:
        root = write_synthetic("ade847", tmp_path, 2, SEED, SIZE)
        label = root / "annotations_detectron2" / "validation" / "ADE_val_00000001.tif"
    else:
        root = write_synthetic("context459", tmp_path, 2, SEED, SIZE)
        label = root / "annotations_detectron2" / "pc459_val" / "2008_000001.tif"
    write_label_tiff(label, labels)
    return dataset_class(root), label


@pytest.mark.parametrize("dataset_class", [ADE20KFullDataset, PascalContext459Dataset])
def test_classes_255_and_300_reach_the_evaluator_and_ignore_is_left_out(tmp_path, dataset_class):
    labels = np.zeros(SIZE, np.uint16)
    labels[:10] = 255  # a class in both (ADE-847 "pier", PC-459 "monkey"), not the toolkit's usual ignore
    labels[10:20] = 300
    labels[20:] = IGNORE
    if dataset_class is PascalContext459Dataset:
        labels[30:] = 459  # register_pascal_context.py: ignore_label=459
    dataset, _ = _one_image(tmp_path, dataset_class, labels)
    mask = dataset[0]["mask"]
    np.testing.assert_array_equal(mask[:10], 255)
    np.testing.assert_array_equal(mask[10:20], 300)
    np.testing.assert_array_equal(mask[20:], IGNORE)
    evaluator = SegmentationEvaluator(len(dataset.class_names), ignore_index=dataset.ignore_index)

    def predict(image, size):  # right on class 255, wrong (class 0) on 300 and on every ignored pixel
        out = torch.zeros(size, dtype=torch.long)
        out[:10] = 255
        return out

    metrics = evaluate_images(predict, dataset, evaluator, "segmentation", torch.device("cpu"))
    assert metrics["IoU"][255] == 100.0 and metrics["IoU"][300] == 0.0 and metrics["Acc"][300] == 0.0
    assert metrics["aAcc"] == pytest.approx(50.0)  # 10 of the 20 labelled rows; the ignored rows not counted
    assert metrics["IoU"][0] == 0.0  # predicted on the 300 rows only, never labelled


@pytest.mark.parametrize("dataset_class,value,expected", [
    (ADE20KFullDataset, 847, r"value 847; ADE20KFullDataset expects 0..846 \(a class\) or 65535"),
    (PascalContext459Dataset, 460, r"value 460; PascalContext459Dataset expects 0..458 \(a class\) or 459 or 65535"),
])  # fmt: skip
def test_a_value_past_the_classes_is_refused_naming_the_file(tmp_path, dataset_class, value, expected):
    labels = np.zeros(SIZE, np.uint16)
    labels[3, 4] = value
    dataset, label = _one_image(tmp_path, dataset_class, labels)
    with pytest.raises(DataError, match=expected) as error:
        dataset[0]
    assert str(label) in str(error.value)


def test_bad_files_and_folders_give_clear_errors(roots, tmp_path):
    root = shutil.copytree(roots["ade847"], tmp_path / "ADE20K_2021_17_01")
    label = root / "annotations_detectron2" / "validation" / "ADE_val_00000001.tif"
    Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(label, format="TIFF")  # colours, not indices
    with pytest.raises(DataError, match=r"ADE_val_00000001.tif is uint8 with shape 36x44x3; expected a single-channel"):
        ADE20KFullDataset(root)[0]
    write_label_tiff(label, np.zeros((SIZE[0], SIZE[1] + 1), np.uint16))
    with pytest.raises(DataError, match="size mismatch"):
        ADE20KFullDataset(root)[0]
    label.unlink()
    with pytest.raises(MissingFileError, match="ADE_val_00000001.jpg has no label map"):
        ADE20KFullDataset(root)
    with pytest.raises(DataError, match=r"annotations_detectron2/validation.*prepare_ade20k_full\.py"):
        ADE20KFullDataset(tmp_path / "elsewhere")
    with pytest.raises(RequestError, match="valid choices: validation"):
        ADE20KFullDataset(root, "training")
    with pytest.raises(DataError, match=r"pc459_val.*prepare_pascal_context_459\.py"):
        PascalContext459Dataset(roots["ade847"])


def test_class_names_transcribed_from_catseg():
    ade, context = ADE20KFullDataset.class_names, PascalContext459Dataset.class_names
    assert len(ade) == 847 and len(context) == 459
    # typed by hand from CAT-Seg datasets/ade847.json (= ADE20K_SEM_SEG_FULL_CATEGORIES, trainId order)
    assert ade[0] == "wall" and ade[1] == "building, edifice" and ade[2] == "sky"
    assert ade[11] == "person, individual, someone, somebody, mortal, soul"
    assert ade[255] == "pier" and ade[300] == "altar, communion table, lord's table"
    assert ade[-1] == "adding machine, totalizer, totaliser"
    # typed by hand from CAT-Seg datasets/pc459.json (= _get_pascal_context_459_meta's list)
    assert context[:3] == ("accordion", "aeroplane", "airconditioner")
    assert context[255] == "monkey" and context[300] == "poker" and context[430] == "unknown"
    assert context[-1] == "wool"
