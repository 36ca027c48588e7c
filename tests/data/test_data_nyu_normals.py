"""NYUv2 normals in the probing lineage's files: all_normals.pklz (restricted unpickling), the SN40 splits,
Probe3D's rawDepths mask, the .npy conversion, and refusals that name the file."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import shutil

import h5py
import numpy as np
import pytest

from siglip2_dense.data import NYUv2Dataset, SyntheticDataset
from siglip2_dense.data.nyu_normals import (
    NORMALS_NPY_FILE,
    NORMALS_PKLZ_FILE,
    convert_normals_to_npy,
    read_normals_pklz,
    read_sn40_indices,
)
from siglip2_dense.data.write_formats import raw_depth_holes, write_nyu_mat
from siglip2_dense.errors import DataError, MissingFileError, RequestError

NUM, SEED, SIZE = 8, 3, (30, 40)
TEST_SCENES, TRAIN_SCENES = [1, 5], [0, 2, 3, 4, 6, 7]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_nyu_mat(tmp_path_factory.mktemp("nyu"), NUM, SEED, SIZE)


@pytest.mark.parametrize("split,indices", [("test", TEST_SCENES), ("train", TRAIN_SCENES)])
def test_normals_follow_the_sn40_split_and_vanish_where_raw_depth_is_missing(root, split, indices):
    scenes = SyntheticDataset(NUM, SEED, SIZE, normals=True)
    dataset = NYUv2Dataset(root, split, layout="mat", normals=True)
    assert len(dataset) == len(indices)
    for item, index in zip(dataset, indices):
        holes = raw_depth_holes(index, SIZE)
        assert item["normals"].dtype == np.float32 and item["normals"].shape == (*SIZE, 3)
        np.testing.assert_array_equal(item["normals"][~holes], scenes[index]["normals"][~holes])
        assert holes.any() and not item["normals"][holes].any()
        np.testing.assert_array_equal(item["depth"], scenes[index]["depth"])  # the filled depths, unmasked
        assert item["path"].endswith(f"#{index + 1}")


def test_raw_depth_past_ten_metres_is_masked_as_probe3d_does(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "nyu")
    with h5py.File(copy / "nyu_depth_v2_labeled.mat", "r+") as mat:
        raw = mat["rawDepths"][1]  # scene 1 (test), [W, H]
        raw[:, 0] = 10.0   # row 0: exactly 10 m stays (0 < d <= 10)
        raw[:, 1] = 10.01  # row 1: past 10 m is dropped (probe3d nyu.py:106 depth[depth > 10] = 0)
        mat["rawDepths"][1] = raw
    item = NYUv2Dataset(copy, "test", layout="mat", normals=True)[0]
    assert np.linalg.norm(item["normals"][0], axis=-1).min() > 0.99
    assert not item["normals"][1].any()


def test_npy_conversion_is_preferred_and_equal(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "nyu")
    path = convert_normals_to_npy(copy)
    assert path.name == NORMALS_NPY_FILE
    np.testing.assert_array_equal(np.load(path), read_normals_pklz(copy / NORMALS_PKLZ_FILE))
    (copy / NORMALS_PKLZ_FILE).unlink()  # the .npy alone suffices
    converted = NYUv2Dataset(copy, "test", layout="mat", normals=True)
    original = NYUv2Dataset(root, "test", layout="mat", normals=True)
    np.testing.assert_array_equal(converted[1]["normals"], original[1]["normals"])


def test_a_pickle_that_asks_for_anything_but_numpy_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    path = tmp_path / NORMALS_PKLZ_FILE
    path.write_bytes(gzip.compress(pickle.dumps({"all_normals": Payload()}, protocol=2)))
    with pytest.raises(DataError, match=r"all_normals\.pklz: the pickle asks for (posix|os|nt)\.system"):
        read_normals_pklz(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_of_every_pickle_protocol_are_read(tmp_path, protocol):
    normals = np.random.default_rng(0).standard_normal((2, 3, 4, 3))  # float64 in the file -> float32 back
    path = tmp_path / NORMALS_PKLZ_FILE
    path.write_bytes(gzip.compress(pickle.dumps({"all_normals": normals}, protocol=protocol)))
    read = read_normals_pklz(path)
    assert read.dtype == np.float32
    np.testing.assert_allclose(read, normals.astype(np.float32))


def test_wrong_files_are_named(root, tmp_path):
    bad = tmp_path / "bad.pklz"
    bad.write_bytes(b"not gzip")
    with pytest.raises(DataError, match="bad.pklz.*gzip pickle"):
        read_normals_pklz(bad)
    bad.write_bytes(gzip.compress(pickle.dumps({"all_normals": np.zeros((2, 3, 4))}, protocol=2)))
    with pytest.raises(DataError, match=r"bad.pklz: 'all_normals' is float64 \(2, 3, 4\); expected an \[N, H, W, 3\]"):
        read_normals_pklz(bad)
    listing = tmp_path / "test_SN40.json"
    listing.write_text(json.dumps([{"img": "0002_x"}, {"img": "9999_x"}]))
    with pytest.raises(DataError, match=r"test_SN40.json: entry 1 has img '9999_x'.*1\.\.8"):
        read_sn40_indices(listing, NUM)
    assert read_sn40_indices(tmp_path / "test_SN40.json", 9999).tolist() == [2, 9999]


def test_missing_normals_and_the_bts_layout_are_refused(root, tmp_path):
    copy = shutil.copytree(root, tmp_path / "nyu")
    (copy / NORMALS_PKLZ_FILE).unlink()
    with pytest.raises(MissingFileError, match="all_normals.npy nor .*all_normals.pklz"):
        NYUv2Dataset(copy, "test", layout="mat", normals=True)
    assert len(NYUv2Dataset(copy, "test", layout="mat")) == 2  # depth alone needs none of them
    with pytest.raises(RequestError, match="labeled .mat"):
        NYUv2Dataset(copy, "test", layout="bts", normals=True)
