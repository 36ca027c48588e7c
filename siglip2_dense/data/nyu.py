"""NYU Depth v2 in the two layouts people have on disk.

``layout="bts"`` -- the BTS / DINOv2 / Depth-Anything layout: a file list with one line per sample,
``rgb_path depth_path focal`` (e.g. ``kitchen_0004/rgb_00045.jpg kitchen_0004/sync_depth_00045.png 518.8579``;
a leading ``/`` as in BTS's train list is accepted), paths relative to a data folder. Depth PNGs are
uint16 millimetres (0 = no measurement). Defaults, as in BTS's ``arguments_*_nyu.txt``::

    root/nyudepthv2_train_files_with_gt.txt   data folder root/sync/                 (split "train")
    root/nyudepthv2_test_files_with_gt.txt    data folder root/official_splits/test/ (split "test", 654 lines)

BTS ships the two lists in its ``train_test_inputs/`` folder; pass ``list_file`` / ``data_path`` when yours
live elsewhere. Lines whose depth path is ``None`` are skipped, as BTS does.

``layout="mat"`` -- the official labeled set: ``root/nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5) with
``images`` stored as ``[N, 3, W, H]`` uint8 and ``depths`` as ``[N, W, H]`` float32 metres (MATLAB's
column-major ``[H, W, 3, N]`` / ``[H, W, N]`` seen from HDF5, hence transposed), and ``root/splits.mat``
(MATLAB v5) with 1-based ``trainNdxs`` (795) and ``testNdxs`` (654). Override with ``data_path`` (the
labeled .mat) and ``list_file`` (splits.mat).

Items: ``{"image": [H, W, 3] uint8 RGB, "depth": [H, W] float32 metres (0 = invalid), "path": str}``; for the
mat layout ``path`` is ``"<labeled .mat>#<1-based index>"``.

``normals=True`` (mat layout only): the probing lineage's NYUv2 normals (:mod:`~siglip2_dense.data.nyu_normals`):
items add ``"normals": [H, W, 3]`` float32 (Ladicky's, from ``root/all_normals.npy`` or ``all_normals.pklz``),
zero where ``rawDepths`` is not in (0, 10] m, and the split's images are those of ``root/<split>_SN40.json``
(Probe3D's), not ``splits.mat``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from torch.utils.data import Dataset

from siglip2_dense.data.image_io import check_same_size, read_rgb, read_unchanged
from siglip2_dense.data.nyu_normals import (
    NORMALS_NPY_FILE,
    NORMALS_PKLZ_FILE,
    RAW_DEPTH_KEY,
    SN40_FILES,
    nyu_normals_item,
    open_normals,
    read_sn40_indices,
)
from siglip2_dense.errors import DataError, MissingFileError, RequestError
from siglip2_dense.files import read_text_file

NYU_SPLITS = ("train", "test")
NYU_LAYOUTS = ("bts", "mat")
BTS_LIST_FILES = {"train": "nyudepthv2_train_files_with_gt.txt", "test": "nyudepthv2_test_files_with_gt.txt"}
BTS_DATA_DIRS = {"train": "sync", "test": "official_splits/test"}
LABELED_MAT_FILE = "nyu_depth_v2_labeled.mat"
SPLITS_MAT_FILE = "splits.mat"
SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}
MILLIMETRES_PER_METRE = 1000.0


class NYUv2Dataset(Dataset):
    """NYU Depth v2 RGB images with metric depth, one split of one on-disk layout.

    Args:
        root: the data set folder (see the module docstring for what each layout expects in it).
        split: ``"train"`` or ``"test"``.
        layout: ``"bts"`` or ``"mat"``.
        list_file: the split file -- the BTS file list, or ``splits.mat`` -- when not at its default place.
        data_path: the BTS data folder the list's paths are relative to, or the labeled ``.mat`` file.
        transform: optional callable applied to each item dict.
        normals: mat layout only: add Ladicky's normals (see the module docstring); the split comes from
            ``<split>_SN40.json`` in ``root``.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "test",
        layout: str = "bts",
        list_file: str | os.PathLike | None = None,
        data_path: str | os.PathLike | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        normals: bool = False,
    ) -> None:
        if split not in NYU_SPLITS:
            raise RequestError(f"unknown NYUv2 split {split!r}; valid choices: {', '.join(NYU_SPLITS)}")
        if layout not in NYU_LAYOUTS:
            raise RequestError(f"unknown NYUv2 layout {layout!r}; valid choices: {', '.join(NYU_LAYOUTS)}")
        self.root = Path(root)
        self.split = split
        self.layout = layout
        self.transform = transform
        self.normals = bool(normals)
        if self.normals and layout != "mat":
            raise RequestError("NYUv2 normals come with the labeled .mat (layout='mat'): Ladicky's normals and "
                               "rawDepths exist for its 1449 images only; the BTS layout has none")
        if layout == "bts":
            self.list_file = Path(list_file) if list_file else self.root / BTS_LIST_FILES[split]
            self.data_dir = Path(data_path) if data_path else self.root / BTS_DATA_DIRS[split]
            self.samples = _read_bts_list(self.list_file, self.data_dir)
        else:
            self.list_file = Path(list_file) if list_file else self.root / SPLITS_MAT_FILE
            self.mat_file = Path(data_path) if data_path else self.root / LABELED_MAT_FILE
            count = _check_labeled_mat(self.mat_file, need_raw_depths=self.normals)
            if self.normals:
                self.indices = read_sn40_indices(self.root / SN40_FILES[split], count)
                self._normals: np.ndarray | None = None
                shape = _normals_shape(self.root)
                if shape is not None and (shape[0] != count or shape[1:3] != _mat_image_size(self.mat_file)):
                    raise DataError(f"{self.root}: the normals hold {shape[0]} maps of {shape[1]}x{shape[2]}; "
                                    f"expected {count} of {_mat_image_size(self.mat_file)} as {self.mat_file}")
            else:
                self.indices = _read_split_indices(self.list_file, split, count)
            self._mat: h5py.File | None = None

    def __len__(self) -> int:
        return len(self.samples) if self.layout == "bts" else len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self._load_bts(index) if self.layout == "bts" else self._load_mat(index)
        return self.transform(item) if self.transform is not None else item

    def _load_bts(self, index: int) -> dict[str, Any]:
        rgb_path, depth_path = self.samples[index]
        image = read_rgb(rgb_path)
        depth = read_depth_png(depth_path)
        check_same_size(rgb_path, image, depth_path, depth, "depth")
        return {"image": image, "depth": depth, "path": str(rgb_path)}

    def _load_mat(self, index: int) -> dict[str, Any]:
        if self._mat is None:  # opened lazily, once per process (DataLoader workers each get their own)
            self._mat = open_hdf5(self.mat_file)
        matlab_index = int(self.indices[index])
        image = np.ascontiguousarray(self._mat["images"][matlab_index - 1].transpose(2, 1, 0))
        depth = np.ascontiguousarray(self._mat["depths"][matlab_index - 1].T, dtype=np.float32)
        item = {"image": image, "depth": depth, "path": f"{self.mat_file}#{matlab_index}"}
        if self.normals:
            if self._normals is None:  # read lazily, once per process
                self._normals = open_normals(self.root)
            raw = np.asarray(self._mat[RAW_DEPTH_KEY][matlab_index - 1].T, dtype=np.float32)
            normals = self._normals[matlab_index - 1]
            if normals.shape[:2] != image.shape[:2]:
                raise DataError(f"{self.root}: normal map {matlab_index} is {normals.shape[0]}x{normals.shape[1]}, "
                                f"its image {image.shape[0]}x{image.shape[1]}; they must be equal")
            item["normals"] = nyu_normals_item(normals, raw)
        return item

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if "_mat" in state:
            state["_mat"] = None  # an open HDF5 handle cannot cross a process boundary
        if "_normals" in state:
            state["_normals"] = None  # read again in each worker (memory-mapped .npy: cheap)
        return state


def read_depth_png(path: str | os.PathLike) -> np.ndarray:
    """Read a uint16 millimetre depth PNG as ``[H, W]`` float32 metres (0 stays 0 = invalid)."""
    millimetres = read_unchanged(path)
    if millimetres.ndim != 2 or millimetres.dtype != np.uint16:
        raise DataError(
            f"depth map {path} is {millimetres.dtype} with shape {millimetres.shape}; "
            "expected a single-channel 16-bit PNG of millimetres"
        )
    return millimetres.astype(np.float32) / np.float32(MILLIMETRES_PER_METRE)


def _read_bts_list(list_file: Path, data_dir: Path) -> list[tuple[Path, Path]]:
    if not list_file.is_file():
        raise MissingFileError(
            f"NYUv2 file list not found: {list_file} (expected lines 'rgb_path depth_path focal'; "
            "pass list_file= if it lives elsewhere)"
        )
    if not data_dir.is_dir():
        raise MissingFileError(
            f"NYUv2 data folder not found: {data_dir} (pass data_path= if it lives elsewhere)"
        )
    samples = []
    for number, line in enumerate(read_text_file(list_file, "NYUv2 file list").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise DataError(f"{list_file} line {number} is {line!r}; expected 'rgb_path depth_path focal'")
        if fields[1] == "None":
            continue
        samples.append((data_dir / fields[0].lstrip("/"), data_dir / fields[1].lstrip("/")))
    if not samples:
        raise DataError(f"NYUv2 file list {list_file} names no samples")
    return samples


def _normals_shape(root: Path) -> tuple[int, ...] | None:
    """The shape of ``root/all_normals.npy`` (read from its header), or None when only the pickle exists."""
    npy = root / NORMALS_NPY_FILE
    if not npy.is_file():
        if not (root / NORMALS_PKLZ_FILE).is_file():
            raise MissingFileError(f"NYUv2 normals not found: neither {npy} nor {root / NORMALS_PKLZ_FILE} "
                                   "(FAIR's nyuv2_surfacenormal_metadata.zip, see probe3d data_processing/README.md)")
        return None
    return tuple(np.load(npy, mmap_mode="r", allow_pickle=False).shape)


def _mat_image_size(mat_file: Path) -> tuple[int, int]:
    with open_hdf5(mat_file) as mat:
        _, _, width, height = mat["images"].shape
    return height, width


def _check_labeled_mat(mat_file: Path, need_raw_depths: bool = False) -> int:
    """Check the labeled .mat holds ``images [N, 3, W, H]`` uint8 and ``depths [N, W, H]`` (and ``rawDepths``
    when asked); return N."""
    if not mat_file.is_file():
        raise MissingFileError(f"NYUv2 labeled file not found: {mat_file}")
    if not h5py.is_hdf5(mat_file):
        raise DataError(f"{mat_file} is not an HDF5 (MATLAB v7.3) file; expected nyu_depth_v2_labeled.mat")
    with open_hdf5(mat_file) as mat:
        missing = [key for key in ("images", "depths", *([RAW_DEPTH_KEY] if need_raw_depths else [])) if key not in mat]
        if missing:
            raise DataError(
                f"{mat_file} has no {' / '.join(missing)} array; keys found: {sorted(mat.keys())}"
            )
        images, depths = mat["images"], mat["depths"]
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != np.uint8:
            raise DataError(
                f"{mat_file}: 'images' is {images.dtype} {images.shape}; expected uint8 [N, 3, W, H]"
            )
        if depths.shape != (images.shape[0], *images.shape[2:]):
            raise DataError(
                f"{mat_file}: 'depths' has shape {depths.shape}; expected [N, W, H] = "
                f"{(images.shape[0], *images.shape[2:])} to match 'images' {images.shape}"
            )
        if need_raw_depths and mat[RAW_DEPTH_KEY].shape != depths.shape:
            raise DataError(f"{mat_file}: '{RAW_DEPTH_KEY}' has shape {mat[RAW_DEPTH_KEY].shape}; expected "
                            f"{depths.shape} as 'depths'")
        return images.shape[0]


def _read_split_indices(splits_file: Path, split: str, count: int) -> np.ndarray:
    """Read the 1-based indices of ``split`` from splits.mat; ``[M]`` int64, each in 1..count."""
    if not splits_file.is_file():
        raise MissingFileError(
            f"NYUv2 split file not found: {splits_file} (expected splits.mat with trainNdxs/testNdxs)"
        )
    key = SPLIT_KEYS[split]
    arrays = _load_mat_arrays(splits_file)
    if key not in arrays:
        raise DataError(f"{splits_file} has no {key!r}; keys found: {sorted(arrays)}")
    indices = np.asarray(arrays[key]).reshape(-1).astype(np.int64)
    bad = indices[(indices < 1) | (indices > count)]
    if bad.size:
        raise DataError(
            f"{splits_file}: {key} holds index {int(bad[0])}; expected 1-based indices in 1..{count} "
            "(the number of images in the labeled .mat)"
        )
    return indices


def _load_mat_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read the arrays of a MATLAB file: v5 through scipy.io.loadmat, v7.3 (HDF5) through h5py."""
    if h5py.is_hdf5(path):
        with open_hdf5(path) as mat:
            return {key: mat[key][()] for key in mat if isinstance(mat[key], h5py.Dataset)}
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as error:
        raise DataError(f"{path} is a MATLAB v5 file; reading it needs scipy (pip install scipy)") from error
    try:
        return {key: value for key, value in loadmat(path).items() if not key.startswith("__")}
    except (ValueError, OSError, MatReadError) as error:
        raise DataError(f"cannot read {path} as a MATLAB file: {error}; it is truncated or not a .mat file, "
                        "replace it with a complete copy") from error


def open_hdf5(path: Path) -> h5py.File:
    """Open an HDF5 (MATLAB v7.3) file for reading; a truncated or corrupt file raises :class:`DataError`."""
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"cannot open {path} as HDF5 (MATLAB v7.3): {error}; it is truncated or corrupt, "
                        "replace it with a complete copy") from error
