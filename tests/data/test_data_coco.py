"""COCO-Stuff 164k and COCO-Object (route (a) from label maps, route (b) from instances with pycocotools)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from mmseg_reference import mmseg_load_seg_map, mmseg_scan

from siglip2_dense.data import (
    COCOObjectDataset,
    COCOObjectInstancesDataset,
    COCOStuffDataset,
    SyntheticDataset,
)
from siglip2_dense.data.coco_object import stuffthingmap_to_coco_object
from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.write_coco import write_cocoobject
from siglip2_dense.errors import DataError, RequestError

NUM, SEED, SIZE = 8, 2, (48, 40)
# Raw values no stuffthingmap holds: COCO's unused thing ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 and
# id 91 (things end at 90, stuff starts at 92), minus 1 (typed from the COCO category list)
UNUSED_RAW = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_cocoobject(tmp_path_factory.mktemp("coco"), NUM, SEED, SIZE)


def test_cocostuff_matches_mmseg_scan_and_loading(coco_root):
    dataset = COCOStuffDataset(coco_root, "val2017")
    expected_pairs = mmseg_scan(coco_root / "images" / "val2017", ".jpg", coco_root / "annotations" / "val2017",
                                "_labelTrainIds.png")
    assert [(str(i), str(label)) for i, label in dataset.pairs] == expected_pairs
    assert len(dataset) == 2 and len(COCOStuffDataset(coco_root, "train2017")) == 6
    for index in range(len(dataset)):
        np.testing.assert_array_equal(dataset[index]["mask"], mmseg_load_seg_map(expected_pairs[index][1]))


def test_raw_stuffthingmaps_give_the_same_train_ids(coco_root):
    converted = COCOStuffDataset(coco_root, "val2017")
    raw = COCOStuffDataset(coco_root, "val2017", label_format="stuffthingmaps")
    assert raw.pairs[0][1].name == "000000000001.png"
    for a, b in zip(converted, raw):
        np.testing.assert_array_equal(a["mask"], b["mask"])


def test_stuffthingmap_table_known_entries():
    # typed from mmseg's coco_stuff164k.py clsID_to_trID
    known = {0: 0, 10: 10, 12: 11, 24: 23, 26: 24, 30: 26, 45: 40, 66: 60, 69: 61, 71: 62, 83: 73, 89: 79,
             91: 80, 120: 109, 181: 170}
    from siglip2_dense.data.coco_stuff import STUFFTHINGMAP_VALUES, stuffthingmap_to_train_ids_table

    table = stuffthingmap_to_train_ids_table()
    assert {raw: int(table[raw]) for raw in known} == known and table[255] == 255
    assert sorted(set(range(182)) - set(STUFFTHINGMAP_VALUES)) == list(UNUSED_RAW)


def test_raw_value_outside_the_table_is_refused(coco_root, tmp_path):
    root = shutil.copytree(coco_root, tmp_path / "coco_stuff164k")
    write_png(root / "annotations" / "val2017" / "000000000001.png", np.full(SIZE, 11, np.uint8))
    with pytest.raises(DataError, match="000000000001.png holds value 11"):
        COCOStuffDataset(root, "val2017", label_format="stuffthingmaps")[0]


def test_sclip_conversion_table_including_its_quirks():
    raw = np.array([[0, 89, 91, 181], [255, 11, 90, 45]], np.uint8)
    # things -> train id + 1; stuff -> 0; unlabeled 255 -> 0 (background); unlisted values unchanged
    np.testing.assert_array_equal(stuffthingmap_to_coco_object(raw), [[1, 80, 0, 0], [0, 11, 90, 41]])


def test_coco_object_route_a_equals_mmseg_loading_and_the_scenes(coco_root):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    dataset = COCOObjectDataset(coco_root, "val2017")
    on_the_fly = COCOObjectDataset(coco_root, "val2017", label_format="stuffthingmaps")
    for position, index in enumerate((1, 5)):
        expected = mmseg_load_seg_map(dataset.pairs[position][1])
        np.testing.assert_array_equal(dataset[position]["mask"], expected)
        np.testing.assert_array_equal(expected, scenes[index]["mask"])  # shape k is COCO-Object class k
        np.testing.assert_array_equal(on_the_fly[position]["mask"], expected)


def test_coco_object_route_b_equals_the_scenes_and_route_a(coco_root):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    for split, indices in (("val2017", (1, 5)), ("train2017", (0, 2, 3, 4, 6, 7))):
        instances = COCOObjectInstancesDataset(coco_root / "images" / split,
                                               coco_root / "annotations" / f"instances_{split}.json")
        converted = COCOObjectDataset(coco_root, split)
        assert len(instances) == len(indices)
        for position, index in enumerate(indices):
            item = instances[position]
            np.testing.assert_array_equal(item["mask"], scenes[index]["mask"])
            np.testing.assert_array_equal(item["mask"], converted[position]["mask"])
            assert item["path"] == converted[position]["path"]


def test_instances_json_holds_polygons_and_both_rle_forms(coco_root):
    document = json.loads((coco_root / "annotations" / "instances_train2017.json").read_text())
    kinds = {("polygon" if isinstance(a["segmentation"], list)
              else "rle-" + type(a["segmentation"]["counts"]).__name__) for a in document["annotations"]}
    assert kinds == {"polygon", "rle-str", "rle-list"}
    assert len(document["categories"]) == 80 and document["categories"][-1]["id"] == 90


def _write_instances(tmp_path, annotations, height=10, width=12):
    image_dir = tmp_path / "val2017"
    write_rgb(image_dir / "000000000001.jpg", np.zeros((height, width, 3), np.uint8))
    document = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": height, "width": width}],
                "annotations": annotations, "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]}
    path = tmp_path / "instances_val2017.json"
    path.write_text(json.dumps(document))
    return image_dir, path


def _box(annotation_id, category, x0, y0, x1, y1, crowd=0):
    return {"id": annotation_id, "image_id": 1, "category_id": category, "iscrowd": crowd,
            "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "area": (x1 - x0) * (y1 - y0), "bbox": [0, 0, 1, 1]}


def test_overlap_rule_smaller_instance_wins_and_crowd_goes_first(tmp_path):
    # a crowd of people over the left half; a big person box; a small dog inside the person box
    annotations = [_box(1, 18, 4, 2, 7, 5), _box(2, 1, 2, 1, 10, 9), _box(3, 1, 0, 0, 6, 10, crowd=1)]
    image_dir, path = _write_instances(tmp_path, annotations)
    mask = COCOObjectInstancesDataset(image_dir, path)[0]["mask"]
    expected = np.zeros((10, 12), np.uint8)
    expected[0:10, 0:6] = 1   # crowd (person) first
    expected[1:9, 2:10] = 1   # big person over it
    expected[2:5, 4:7] = 17   # dog (category 18 = COCO-Object class 17) wins over the larger person
    np.testing.assert_array_equal(mask, expected)
    ignored = COCOObjectInstancesDataset(image_dir, path, crowd_as_ignore=True)[0]["mask"]
    expected[0:10, 0:6] = 255
    expected[1:9, 2:10] = 1
    expected[2:5, 4:7] = 17
    np.testing.assert_array_equal(ignored, expected)


def test_category_outside_the_80_things_is_refused(tmp_path):
    image_dir, path = _write_instances(tmp_path, [_box(1, 92, 0, 0, 2, 2)])
    with pytest.raises(DataError, match="category_id 92"):
        COCOObjectInstancesDataset(image_dir, path)[0]


def test_wrong_root_and_unknown_format(coco_root):
    with pytest.raises(DataError, match=r"coco_stuff164k folder.*coco_stuff164k\.py"):
        COCOStuffDataset(coco_root / "images", "val2017")
    with pytest.raises(RequestError, match="labelTrainIds, stuffthingmaps"):
        COCOStuffDataset(coco_root, "val2017", label_format="trainIds")
    with pytest.raises(DataError, match="cvt_coco_object"):
        COCOObjectDataset(coco_root / "annotations", "val2017")


def test_class_names():
    assert len(COCOStuffDataset.class_names) == 171 and COCOStuffDataset.class_names[161] == "wall-other"
    assert COCOObjectDataset.class_names[:3] == ("background", "person", "bicycle")
    assert len(COCOObjectDataset.class_names) == 81 and COCOObjectDataset.class_names[80] == "toothbrush"
    assert COCOObjectInstancesDataset.class_names == COCOObjectDataset.class_names
