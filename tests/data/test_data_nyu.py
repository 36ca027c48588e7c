"""NYUv2Dataset: the BTS layout and the labeled .mat read back to the millimetre; transposition and splits."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from siglip2_dense.data import NYUv2Dataset, SyntheticDataset
from siglip2_dense.data.image_io import write_png
from siglip2_dense.data.nyu import read_depth_png
from siglip2_dense.data.write_formats import write_nyu_bts, write_nyu_mat, write_splits_mat
from siglip2_dense.errors import DataError, MissingFileError, RequestError

NUM, SEED, SIZE = 8, 5, (36, 52)
TEST_SCENES, TRAIN_SCENES = [1, 5], [0, 2, 3, 4, 6, 7]


@pytest.fixture(scope="module")
def scenes():
    data = SyntheticDataset(NUM, SEED, SIZE)
    return [data[i] for i in range(NUM)]


@pytest.fixture(scope="module")
def bts_root(tmp_path_factory):
    return write_nyu_bts(tmp_path_factory.mktemp("bts"), NUM, SEED, SIZE)


@pytest.fixture(scope="module")
def mat_root(tmp_path_factory):
    return write_nyu_mat(tmp_path_factory.mktemp("mat"), NUM, SEED, SIZE)


@pytest.mark.parametrize("split, indices", [("train", TRAIN_SCENES), ("test", TEST_SCENES)])
def test_bts_depth_reads_back_in_metres_to_the_millimetre(bts_root, scenes, split, indices):
    data = NYUv2Dataset(bts_root, split, "bts")
    assert len(data) == len(indices)
    for item, index in zip(data, indices):
        depth = item["depth"]
        assert depth.dtype == np.float32 and depth.shape == SIZE
        assert np.abs(depth - scenes[index]["depth"]).max() <= 0.0005 + 1e-6
        np.testing.assert_allclose(depth, np.round(scenes[index]["depth"] * 1000) / 1000, atol=1e-6)
        assert item["image"].shape == (*SIZE, 3) and item["image"].dtype == np.uint8
        assert np.abs(item["image"].astype(int) - scenes[index]["image"]).mean() < 4
        assert item["path"].endswith(f"rgb_{index:05d}.jpg")


def test_bts_list_files_follow_the_bts_conventions(bts_root):
    train_lines = (bts_root / "nyudepthv2_train_files_with_gt.txt").read_text().splitlines()
    test_lines = (bts_root / "nyudepthv2_test_files_with_gt.txt").read_text().splitlines()
    assert train_lines[0].startswith("/scene_0000/rgb_00000.jpg /scene_0000/sync_depth_00000.png ")
    assert test_lines[0].startswith("scene_0000/rgb_00001.jpg scene_0000/sync_depth_00001.png ")
    assert (bts_root / "official_splits" / "test" / "scene_0000" / "sync_depth_00001.png").is_file()
    assert (bts_root / "sync" / "scene_0000" / "rgb_00000.jpg").is_file()


def test_bts_explicit_list_and_data_folder_and_none_lines(bts_root, tmp_path):
    moved = shutil.copytree(bts_root / "official_splits" / "test", tmp_path / "elsewhere")
    listing = tmp_path / "my_list.txt"
    listing.write_text(
        "scene_0000/rgb_00005.jpg scene_0000/sync_depth_00005.png 518.8579\n"
        "\n"
        "scene_0000/rgb_00001.jpg None 518.8579\n"
    )
    data = NYUv2Dataset(tmp_path / "nowhere", "test", "bts", list_file=listing, data_path=moved)
    assert len(data) == 1 and data[0]["path"] == str(moved / "scene_0000" / "rgb_00005.jpg")


@pytest.mark.parametrize("split, indices", [("train", TRAIN_SCENES), ("test", TEST_SCENES)])
def test_mat_reads_back_exactly_in_split_order(mat_root, scenes, split, indices):
    data = NYUv2Dataset(mat_root, split, "mat")
    assert len(data) == len(indices)
    for item, index in zip(data, indices):
        np.testing.assert_array_equal(item["image"], scenes[index]["image"])
        np.testing.assert_array_equal(item["depth"], scenes[index]["depth"])
        assert item["depth"].dtype == np.float32
        assert item["path"] == f"{mat_root / 'nyu_depth_v2_labeled.mat'}#{index + 1}"


def test_mat_layout_is_transposed_and_indices_are_one_based(tmp_path):
    """Hand-written file: N=3 images of H=2, W=5 whose pixel (h, w) of image n is 100n + 10h + w."""
    n, h, w = np.meshgrid(np.arange(3), np.arange(2), np.arange(5), indexing="ij")
    values = (100 * n + 10 * h + w).astype(np.uint16)  # [N, H, W]
    images = np.stack([values % 256, values // 256, np.full_like(values, 7)], axis=-1).astype(np.uint8)
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as mat:
        mat["images"] = images.transpose(0, 3, 2, 1)  # [N, 3, W, H], as MATLAB's [H, W, 3, N] seen by HDF5
        mat["depths"] = (values / 100.0).astype(np.float32).transpose(0, 2, 1)  # [N, W, H]
    write_splits_mat(tmp_path / "splits.mat", np.array([[3], [1]], float), np.array([[2]], float))
    train = NYUv2Dataset(tmp_path, "train", "mat")
    first = train[0]  # trainNdxs[0] = 3 -> image n = 2
    assert first["image"].shape == (2, 5, 3) and first["depth"].shape == (2, 5)
    assert first["image"][1, 4].tolist() == [214, 0, 7]
    assert first["depth"][1, 4] == np.float32(2.14)
    assert train[1]["image"][0, 3, 0] == 3 and train[1]["path"].endswith("#1")
    assert NYUv2Dataset(tmp_path, "test", "mat")[0]["image"][1, 2, 0] == 112


def test_splits_mat_is_matlab_v5(mat_root):
    scipy_io = pytest.importorskip("scipy.io")
    arrays = scipy_io.loadmat(mat_root / "splits.mat")
    assert arrays["testNdxs"].ravel().tolist() == [2, 6]
    assert arrays["trainNdxs"].shape == (6, 1)


def test_splits_in_hdf5_are_read_too(mat_root, tmp_path):
    shutil.copy(mat_root / "nyu_depth_v2_labeled.mat", tmp_path)
    with h5py.File(tmp_path / "splits.mat", "w") as mat:
        mat["trainNdxs"], mat["testNdxs"] = np.array([[8.0, 1.0]]), np.array([[4.0]])
    assert [d["path"][-2:] for d in NYUv2Dataset(tmp_path, "train", "mat")] == ["#8", "#1"]


def test_split_index_out_of_range_is_reported(mat_root, tmp_path):
    shutil.copy(mat_root / "nyu_depth_v2_labeled.mat", tmp_path)
    write_splits_mat(tmp_path / "splits.mat", np.array([[0.0]]), np.array([[9.0]]))
    with pytest.raises(DataError, match=r"splits\.mat.*testNdxs holds index 9.*1\.\.8"):
        NYUv2Dataset(tmp_path, "test", "mat")
    with pytest.raises(DataError, match=r"trainNdxs holds index 0"):
        NYUv2Dataset(tmp_path, "train", "mat")


def test_missing_splits_file_is_named(mat_root, tmp_path):
    shutil.copy(mat_root / "nyu_depth_v2_labeled.mat", tmp_path)
    with pytest.raises(MissingFileError, match=r"splits\.mat"):
        NYUv2Dataset(tmp_path, "test", "mat")


def test_missing_labeled_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match=r"nyu_depth_v2_labeled\.mat"):
        NYUv2Dataset(tmp_path, "test", "mat")


def test_wrong_mat_layout_is_reported(tmp_path):
    with h5py.File(tmp_path / "nyu_depth_v2_labeled.mat", "w") as mat:
        mat["images"] = np.zeros((2, 4, 5, 3), np.uint8)  # [N, W, H, 3]: not the MATLAB layout
        mat["depths"] = np.zeros((2, 4, 5), np.float32)
    with pytest.raises(DataError, match=r"'images' is uint8 \(2, 4, 5, 3\); expected uint8 \[N, 3, W, H\]"):
        NYUv2Dataset(tmp_path, "test", "mat")


def test_missing_list_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match=r"nyudepthv2_test_files_with_gt\.txt"):
        NYUv2Dataset(tmp_path, "test", "bts")


def test_eight_bit_depth_png_is_rejected_naming_the_file(bts_root, tmp_path):
    root = shutil.copytree(bts_root, tmp_path / "nyu")
    depth = root / "official_splits" / "test" / "scene_0000" / "sync_depth_00001.png"
    write_png(depth, np.full(SIZE, 200, np.uint8))
    with pytest.raises(DataError, match=r"sync_depth_00001\.png is uint8.*16-bit PNG of millimetres"):
        NYUv2Dataset(root, "test", "bts")[0]


def test_depth_png_size_mismatch_names_both_files(bts_root, tmp_path):
    root = shutil.copytree(bts_root, tmp_path / "nyu")
    write_png(
        root / "official_splits" / "test" / "scene_0000" / "sync_depth_00001.png", np.ones((4, 4), np.uint16)
    )
    with pytest.raises(DataError, match=r"rgb_00001\.jpg is 36x52.*sync_depth_00001\.png is 4x4"):
        NYUv2Dataset(root, "test", "bts")[0]


def test_zero_millimetres_stay_invalid(tmp_path):
    write_png(tmp_path / "d.png", np.array([[0, 1, 65535]], np.uint16))
    np.testing.assert_array_equal(
        read_depth_png(tmp_path / "d.png"), np.array([[0, 0.001, 65.535]], np.float32)
    )


def test_bad_split_and_layout_name_the_choices(bts_root):
    with pytest.raises(RequestError, match="train, test"):
        NYUv2Dataset(bts_root, "val", "bts")
    with pytest.raises(RequestError, match="bts, mat"):
        NYUv2Dataset(bts_root, "test", "h5")


def test_mat_dataset_pickles_without_its_open_file(mat_root):
    import pickle

    data = NYUv2Dataset(mat_root, "test", "mat")
    first = data[0]  # opens the HDF5 file
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone[0]["depth"], first["depth"])
