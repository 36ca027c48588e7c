"""Feature PCA pictures: colours against a numpy PCA of the same features, padding left out and black, the
picture's size at NaFlex and FixRes, and tools/visualize_features.py end to end."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from siglip2_dense import load_backbone
from siglip2_dense.backbone.feature_pca import feature_pca_picture, pca_colours
from siglip2_dense.errors import RequestError

ROOT = Path(__file__).resolve().parents[2]


def numpy_pca_colours(points: np.ndarray) -> np.ndarray:
    """``[N, C]`` -> ``[N, 3]`` uint8 by an eigen-decomposition of the covariance (another route than the SVD)."""
    centred = points - points.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    projections = centred @ vectors[:, np.argsort(values)[::-1][:3]]
    projections *= np.sign(projections[np.abs(projections).argmax(axis=0), range(3)])
    low, high = projections.min(axis=0), projections.max(axis=0)
    return np.round((projections - low) / (high - low) * 255).astype(np.uint8)


def test_colours_are_a_numpy_pca_over_the_real_patches_only(rng):
    features = torch.from_numpy(rng.normal(size=(16, 6, 9)))
    features[:, :, :4] *= 3.0  # structure: the left columns vary more
    mask = torch.ones(6, 9, dtype=torch.bool)
    mask[4:, 7:] = False
    features[:, ~mask] = 1e6  # padding so extreme it would own every axis if it were counted
    colours = pca_colours(features, mask)
    assert colours.shape == (6, 9, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(colours[~mask.numpy()], 0)
    want = numpy_pca_colours(features.permute(1, 2, 0)[mask].numpy())
    assert np.abs(colours[mask.numpy()].astype(int) - want.astype(int)).max() <= 1
    for channel in range(3):  # every component spans the full range over the real patches
        assert colours[mask.numpy()][:, channel].min() == 0 and colours[mask.numpy()][:, channel].max() == 255


def test_colours_depend_on_the_features_alone(rng):
    features = torch.from_numpy(rng.normal(size=(8, 5, 5)))
    mask = torch.ones(5, 5, dtype=torch.bool)
    colours = pca_colours(features, mask)
    # a sign flip or a shift of the features changes no colour (the sign of each axis is fixed by the data)
    np.testing.assert_array_equal(pca_colours(-features, mask), colours)
    np.testing.assert_array_equal(pca_colours(features + 5.0, mask), colours)
    with pytest.raises(RequestError, match="no real patch"):
        pca_colours(features, torch.zeros(5, 5, dtype=torch.bool))


def test_naflex_picture_is_image_beside_its_grid_at_native_aspect(tiny_naflex_dir, rng):
    backbone = load_backbone(str(tiny_naflex_dir), layers=[-2])
    image = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    picture = feature_pca_picture(backbone, image, max_num_patches=48)
    assert picture.shape == (50, 180, 3)
    np.testing.assert_array_equal(picture[:, :90], image)
    inputs = backbone.preprocess([image], max_num_patches=48)
    height, width = inputs["spatial_shapes"][0].tolist()
    assert width > height  # the image's aspect ratio, not a square
    with torch.inference_mode():
        grid = backbone(**inputs).maps[0][0, :, :height, :width]
    colours = pca_colours(grid, torch.ones(height, width, dtype=torch.bool))
    np.testing.assert_array_equal(picture[:, 90:], cv2.resize(colours, (90, 50), interpolation=cv2.INTER_NEAREST))


def test_fixres_picture_crops_the_padded_patches(tiny_fixres_dir, rng):
    backbone = load_backbone(str(tiny_fixres_dir))
    image = rng.integers(0, 256, (30, 45, 3), dtype=np.uint8)  # 8 x 12 patches of 4 px, the last partly padding
    picture = feature_pca_picture(backbone, image)
    assert picture.shape == (30, 90, 3)
    cells = picture[:, 45:][::4, ::4]
    assert cells.shape == (8, 12, 3)
    np.testing.assert_array_equal(picture[:, 45:], np.repeat(np.repeat(cells, 4, 0), 4, 1)[:30, :45])


def test_tool_writes_the_picture(tiny_naflex_dir, rng, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("visualize_features", ROOT / "tools" / "visualize_features.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    image_path, out = tmp_path / "street.png", tmp_path / "street_pca.png"
    Image.fromarray(rng.integers(0, 256, (36, 20, 3), dtype=np.uint8)).save(image_path)
    assert tool.main([str(image_path), "--model", str(tiny_naflex_dir), "--out", str(out), "--layer", "-1"]) == 0
    with Image.open(out) as picture:
        assert picture.size == (40, 36)
    capsys.readouterr()
    assert tool.main([str(tmp_path / "missing.png"), "--model", str(tiny_naflex_dir)]) == 2
    assert capsys.readouterr().err.startswith("error: file not found")
