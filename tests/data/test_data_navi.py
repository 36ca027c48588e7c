"""NAVIDataset: NAVI's depth encoding, Probe3D's normals from depth (and their sign), splits, crop, writer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from siglip2_dense.data import SyntheticDataset
from siglip2_dense.data.image_io import read_unchanged, write_png
from siglip2_dense.data.navi import (
    NAVIDataset,
    decode_navi_depth,
    encode_navi_depth,
    probe3d_normals,
    square_box,
)
from siglip2_dense.data.write_formats import write_navi
from siglip2_dense.errors import DataError, RequestError

NUM, SEED, SIZE = 32, 4, (48, 48)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_navi(tmp_path_factory.mktemp("navi"), NUM, SEED, SIZE)


def test_depth_decoding_is_google_navi_decode_depth():
    values = np.array([[0, 1, 655, 65535]], np.uint16)
    # google/navi data_util.py:45-50 in float32: disparity = v / (65535 * 10); inf where 0; depth = 1 / disparity
    disparity = values.astype(np.float32) / np.float32(65535 * 10.0)
    disparity[disparity == 0] = np.inf
    reference_mm = 1 / disparity
    np.testing.assert_allclose(decode_navi_depth(values), reference_mm / 1000, rtol=1e-6)
    assert decode_navi_depth(values)[0, 2] == pytest.approx(1.000534, rel=1e-5)  # 655 -> 1000.5 mm
    np.testing.assert_array_equal(encode_navi_depth(decode_navi_depth(values)), values)
    with pytest.raises(RequestError, match="10 mm"):
        encode_navi_depth(np.array([[0.005]]))


def test_normals_of_a_facing_plane_and_a_tilted_plane_face_the_camera():
    flat = probe3d_normals(np.full((9, 11), 2.0, np.float32), focal=50.0)
    np.testing.assert_allclose(flat[1:-1, 1:-1], np.broadcast_to([0, 0, -1], (7, 9, 3)), atol=1e-6)
    assert not flat[0].any() and not flat[:, -1].any()  # Probe3D leaves the border at 0
    # the plane z = 2 + 0.5 x (x in metres): normal along (-0.5, 0, 1) away from the camera, so (0.5, 0, -1) here;
    # with Probe3D's K = diag(f, f, 1) a pixel centre u sees x = u z / f, so z = 2 / (1 - 0.5 u / f)
    focal, u = 40.0, np.linspace(0.5, 10.5, 11)
    depth = np.tile((2.0 / (1 - 0.5 * u / focal)).astype(np.float32), (9, 1))
    tilted = probe3d_normals(depth, focal)
    expected = np.array([0.5, 0.0, -1.0]) / np.linalg.norm([0.5, 0.0, -1.0])
    np.testing.assert_allclose(tilted[1:-1, 1:-1], np.broadcast_to(expected, (7, 9, 3)), atol=1e-4)
    holes = depth.copy()
    holes[4, 5] = 0
    assert not probe3d_normals(holes, focal)[4, 5].any()


def test_square_box_is_probe3d_bbox_crop():
    mask = np.zeros((20, 30), bool)
    mask[5:9, 10:20] = True  # rows 5..8, cols 10..19: box (3, 9) by max - min, side 9, centred: rows 2..10
    assert square_box(mask) == (2, 10, 11, 19)
    mask = np.zeros((20, 30), bool)
    mask[0:3, 0:12] = True  # would start above the image: the far corner, clipped at 0
    assert square_box(mask) == (0, 0, 11, 11)


def test_splits_follow_probe3d(root):
    test, trainval = NAVIDataset(root, "test"), NAVIDataset(root, "trainval")
    # 8 objects x 2 wild-set scenes = 16 -> every 4th = 4; 8 objects x 2 multiview collections x 1 = 16 -> 4
    assert len(test) == 4 and len(trainval) == 4
    assert all(s[0].name == "wild_set" for s in test.samples)
    assert all(s[0].name.startswith("multiview-") for s in trainval.samples)
    # two multiview collections per object: int(0.9 * 2) = 1 for train, the other for valid
    train, valid = NAVIDataset(root, "train"), NAVIDataset(root, "valid")
    assert {s[0].name for s in train.samples} == {"multiview-00-synthetic"}
    assert {s[0].name for s in valid.samples} == {"multiview-01-synthetic"}


def test_items_are_cropped_around_the_object_with_normals_from_depth(root):
    item = NAVIDataset(root, "test")[0]
    assert item["image"].shape == (512, 512, 3) and item["image"].dtype == np.uint8
    assert item["depth"].shape == (512, 512) and item["normals"].shape == (512, 512, 3)
    valid = item["depth"] > 0
    assert valid.mean() > 0.1
    lengths = np.linalg.norm(item["normals"], axis=-1)
    assert np.allclose(lengths[lengths > 0], 1, atol=1e-5) and not item["normals"][~valid].any()
    # the synthetic shapes are cut-outs facing the camera: the interior of each has normal (0, 0, -1)
    interior = lengths > 0
    assert (item["normals"][interior][:, 2] < -0.99).mean() > 0.8


def test_depth_reads_back_the_scene_depth(root, tmp_path):
    scenes = SyntheticDataset(NUM, SEED, SIZE)
    obj = root / "object_000" / "wild_set"
    values = read_unchanged(obj / "depth" / "001.png")
    truth = np.where(scenes[1]["mask"] > 0, scenes[1]["depth"], 0)
    np.testing.assert_array_equal(values, encode_navi_depth(truth))
    # the encoding quantises disparity: at most half a step, 0.5 / value relative (0.8 % at 10 m)
    decoded = decode_navi_depth(values)
    assert (np.abs(decoded - truth) <= truth * 0.5 / np.maximum(values, 1) + 1e-6).all()
    assert ((decoded > 0) == (truth > 0)).all()


def test_bad_files_are_named(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "navi_v1")
    annotations = copy / "object_000" / "wild_set" / "annotations.json"
    entries = json.loads(annotations.read_text())
    del entries[0]["camera"]["focal_length"]
    annotations.write_text(json.dumps(entries))
    with pytest.raises(DataError, match="annotations.json: an entry lacks filename, camera.focal_length"):
        NAVIDataset(copy, "test")
    copy = shutil.copytree(root, tmp_path / "navi_b")
    write_png(copy / "object_000" / "wild_set" / "depth" / "001.png", np.zeros((48, 48), np.uint8))
    with pytest.raises(DataError, match="001.png is uint8.*16-bit"):
        NAVIDataset(copy, "test")[0]
    with pytest.raises(RequestError, match="train, valid, trainval, test"):
        NAVIDataset(root, "val")
