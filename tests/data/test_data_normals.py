"""Surface-normal data: the PNG encoding, the synthetic world's exact normals, the folder form written and
read back, transforms that turn the vectors with the pixels, and collation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siglip2_dense.data import (
    FolderNormalsDataset,
    SyntheticDataset,
    collate_padded,
    make_scene,
    write_synthetic,
)
from siglip2_dense.data.normals_png import decode_normals, encode_normals
from siglip2_dense.data.normals_transforms import build_normals_train_transform, flip_item, rotate_item
from siglip2_dense.data.order import seed_transform
from siglip2_dense.data.synthetic import FLOOR_NORMAL, WALL_NORMAL
from siglip2_dense.errors import DataError, MissingFileError


def angles_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    cosine = np.sum(a * b, axis=-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


def test_png_encoding_round_trip_and_missing_pixels():
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(9, 7, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[2, 3] = 0.0
    encoded = encode_normals(normals)
    assert encoded.dtype == np.uint8 and encoded[2, 3].tolist() == [0, 0, 0]
    assert encode_normals(np.array([[[0.0, 0.0, -1.0]]]))[0, 0].tolist() == [128, 128, 0]  # round(127.5) = 128
    decoded = decode_normals(encoded)
    assert decoded[2, 3].tolist() == [0.0, 0.0, 0.0]
    valid = np.ones((9, 7), bool)
    valid[2, 3] = False
    assert angles_degrees(decoded[valid], normals[valid]).max() < 0.5  # 8 bits per component
    assert decoded[0, 0] == pytest.approx(encoded[0, 0] / 127.5 - 1)
    with pytest.raises(DataError, match="uint8"):
        decode_normals(normals.astype(np.float32))


def test_synthetic_normals_follow_the_scene_geometry():
    for seed in range(4):
        scene = make_scene(seed, 48, 64)
        normals = scene.normals
        assert normals.shape == (48, 64, 3) and normals.dtype == np.float32
        floor = np.all(normals == np.float32(FLOOR_NORMAL), axis=-1)
        facing = np.all(normals == np.float32(WALL_NORMAL), axis=-1)
        assert np.all(floor | facing) and floor.any() and facing.any()
        # from the depth: the floor is background nearer than the wall (1/Z grows linearly down the rows),
        # the wall is the farthest background, and every shape pixel faces the camera
        wall_depth = scene.depth[scene.mask == 0].max()
        assert np.array_equal(floor, (scene.mask == 0) & (scene.depth < wall_depth))
        rows, columns = np.nonzero(floor)
        inverse = 1.0 / scene.depth[rows, columns].astype(np.float64)
        design = np.stack([rows + 0.5, columns + 0.5, np.ones_like(inverse)], axis=1)
        coefficients = np.linalg.lstsq(design, inverse, rcond=None)[0]
        row_slope, column_slope = coefficients[:2]
        assert row_slope > 0 and abs(column_slope) < 1e-6 * row_slope + 1e-9  # a plane y = const below the camera
        assert np.abs(design @ coefficients - inverse).max() < 1e-5 * inverse.max()
        assert np.all(facing[scene.mask > 0])


def test_synthetic_dataset_yields_normals_on_request():
    assert "normals" not in SyntheticDataset(2, size=(32, 32))[0]
    item = SyntheticDataset(2, size=(32, 32), normals=True)[1]
    assert np.array_equal(item["normals"], make_scene((0, 1), 32, 32).normals)


def test_normals_folder_written_and_read_back(tmp_path):
    root = write_synthetic("normals-folder", tmp_path / "normals", num=5, seed=3, size=(40, 48))
    test = FolderNormalsDataset(root, "test")
    train = FolderNormalsDataset(root, "train")
    assert len(test) == 1 and len(train) == 4  # scene 1 is the evaluation scene
    item = test[0]
    scene = make_scene((3, 1), 40, 48)
    assert np.array_equal(item["image"], scene.image)
    assert item["normals"].shape == (40, 48, 3)
    assert angles_degrees(item["normals"], scene.normals).max() < 0.5
    assert np.allclose(item["depth"], scene.depth, atol=5e-4)
    (root / "train" / "normals" / "00002.png").unlink()
    with pytest.raises(MissingFileError, match="00002.png"):
        FolderNormalsDataset(root, "train")
    with pytest.raises(MissingFileError, match="expected"):
        FolderNormalsDataset(root, "validation")


def test_flip_negates_x():
    rng = np.random.default_rng(1)
    item = {"image": rng.integers(0, 255, (5, 6, 3), dtype=np.uint8), "normals": rng.normal(size=(5, 6, 3)),
            "depth": rng.random((5, 6)).astype(np.float32), "path": "p"}
    flipped = flip_item(item)
    assert np.array_equal(flipped["image"], item["image"][:, ::-1])
    assert np.array_equal(flipped["depth"], item["depth"][:, ::-1])
    assert np.array_equal(flipped["normals"][..., 0], -item["normals"][:, ::-1, 0])
    assert np.array_equal(flipped["normals"][..., 1:], item["normals"][:, ::-1, 1:])
    assert flipped["path"] == "p"


def test_rotation_by_90_degrees_turns_a_rightward_normal_upward():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (7, 7, 3), dtype=np.uint8)
    normals = np.zeros((7, 7, 3), np.float32)
    normals[..., 0] = 1.0  # every pixel faces right
    rotated = rotate_item({"image": image, "normals": normals}, 90.0)
    assert np.array_equal(rotated["image"], np.rot90(image))  # OpenCV's positive angle: counter-clockwise
    assert np.allclose(rotated["normals"], np.float32([0.0, -1.0, 0.0]), atol=1e-6)  # up = -y


def test_train_transform_keeps_unit_normals_and_is_reseedable():
    scene = make_scene(5, 48, 64)
    item = {"image": scene.image, "normals": scene.normals, "depth": scene.depth}
    transform = build_normals_train_transform((32, 40), rotate_degrees=20.0, flip_prob=0.5, colour_prob=1.0)
    outputs = []
    for _ in range(2):
        seed_transform(transform, 11)
        outputs.append(transform(dict(item)))
    a, b = outputs
    assert a["image"].shape == (32, 40, 3) and a["normals"].shape == (32, 40, 3) and a["depth"].shape == (32, 40)
    assert all(np.array_equal(a[k], b[k]) for k in ("image", "normals", "depth"))
    lengths = np.linalg.norm(a["normals"], axis=-1)
    assert np.all((np.abs(lengths - 1) < 1e-5) | (lengths == 0))
    assert np.all((lengths == 0) == (a["depth"] == 0))  # what a rotation uncovers is missing in both
    seen_flipped = False
    for seed in range(12):  # some seed flips: the floor keeps pointing up, the wall at the camera
        seed_transform(transform, seed)
        out = transform(dict(item))
        seen_flipped |= bool(np.any(np.abs(out["normals"][..., 0]) > 0.01))
        valid = np.linalg.norm(out["normals"], axis=-1) > 0
        assert np.all(out["normals"][valid][:, 2] <= 1e-6) and valid.any()
    assert seen_flipped  # rotations give the floor normal an x component


def test_collate_pads_normals_with_zero():
    items = [{"image": np.zeros((4, 5, 3), np.uint8), "normals": np.ones((4, 5, 3), np.float32)},
             {"image": np.zeros((6, 3, 3), np.uint8), "normals": np.ones((6, 3, 3), np.float32)}]
    batch = collate_padded(items)
    assert batch["normals"].shape == (2, 6, 5, 3) and batch["normals"].dtype == torch.float32
    assert float(batch["normals"][0, 4:].abs().sum()) == 0 and float(batch["normals"][1, :, 3:].abs().sum()) == 0
    assert batch["target_size"].tolist() == [[4, 5], [6, 3]]
    assert math.isclose(float(batch["normals"][1, :6, :3].mean()), 1.0)
