"""NYUv2 surface normals as the probing lineage evaluates them: Ladicky's normals of the labeled set.

Probe3D (github.com/mbanani/probe3d @a1f14640), whose protocol TIPS and the SigLIP2 paper follow, tests
normals on the labeled NYUv2 set with the annotations of FAIR's SSL benchmark
(``data_processing/README.md:66-85``: ``nyu_depth_v2_labeled.mat`` and
``dl.fbaipublicfiles.com/fair_self_supervision_benchmark/nyuv2_surfacenormal_metadata.zip``, unzipped into
the same folder)::

    root/nyu_depth_v2_labeled.mat   images, depths, rawDepths (HDF5)
    root/all_normals.pklz           gzip pickle of {"all_normals": [1449, 480, 640, 3]}
    root/train_SN40.json            [{"img": "<1-based index>_...", ...}, ...]
    root/test_SN40.json             the same for the test images

What Probe3D does with them (``data_processing/create_nyu_pkl.py:33-56``, ``evals/datasets/nyu.py:79-115``,
``train_snorm.py:81,130-143``): normals = ``all_normals[i]``; the split's indices are
``int(entry["img"].split("_")[0]) - 1`` of the SN40 json; depth = ``rawDepths`` with values above 10 m set
to 0; a pixel counts where that depth is > 0, i.e. where ``rawDepths`` is in (0, 10]. Here
:func:`nyu_normals_item` zeroes the normals elsewhere (zero = missing for the loss and
:class:`~siglip2_dense.evaluation.NormalsEvaluator`), so the mask is Probe3D's.

The normals are used as the file stores them; their axis and sign convention is Ladicky's and could not be
checked against a public description here (Probe3D uses them unchanged, as this module does).

Probe3D trains on another set (Bansal et al.'s normals of the raw NYU videos, released by GeoNet, read
from per-frame ``.mat`` files); that set is not read here, so a run on the labeled set trains on its
795 training images (``train_SN40.json``) -- a listed deviation of the configs.

The pickle is never unpickled with plain :mod:`pickle`: :func:`read_normals_pklz` allows only the globals
that rebuild numpy arrays and refuses any other. For repeated runs convert it once with
:func:`convert_normals_to_npy` (``all_normals.npy`` next to it, read memory-mapped, ~5 GB instead of a
full unpickle per process); the data set prefers the ``.npy`` when present.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from siglip2_dense.errors import DataError, MissingFileError
from siglip2_dense.files import atomic_output, read_json

NORMALS_PKLZ_FILE = "all_normals.pklz"
NORMALS_NPY_FILE = "all_normals.npy"
SN40_FILES = {"train": "train_SN40.json", "test": "test_SN40.json"}
RAW_DEPTH_KEY = "rawDepths"
MAX_RAW_DEPTH = 10.0  # probe3d evals/datasets/nyu.py:106  depth[depth > 10] = 0; train_snorm.py:130  mask = depth > 0
# The globals a pickled numpy array needs (numpy 1.x and 2.x module names; protocol 2-5; Python 2 strings).
ALLOWED_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})  # fmt: skip


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, dicts, lists and strings, and refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles store numpy's bytes as str
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise DataError(f"{self.source}: the pickle asks for {module}.{name}; only numpy array reconstruction "
                        f"is allowed ({', '.join(sorted(f'{m}.{n}' for m, n in ALLOWED_PICKLE_GLOBALS))}). "
                        "It is not the FAIR SSL benchmark's all_normals.pklz; replace it with the original")


def read_normals_pklz(path: str | os.PathLike) -> np.ndarray:
    """``all_normals.pklz`` -> ``[N, H, W, 3]`` float32 (N = 1449, 480 x 640 for the real file).

    Raises:
        MissingFileError: no such file. DataError: not gzip, not a pickle of numpy arrays, or the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"NYUv2 normals file not found: {path} (all_normals.pklz from FAIR's "
                               "nyuv2_surfacenormal_metadata.zip, see probe3d data_processing/README.md)")
    try:
        with gzip.open(path, "rb") as file:
            loaded = NumpyOnlyUnpickler(file, str(path)).load()  # type: ignore[arg-type]
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError) as error:
        raise DataError(f"cannot read {path} as a gzip pickle of numpy arrays: {error}; it is truncated or not "
                        "all_normals.pklz, replace it with a complete copy") from error
    normals = loaded.get("all_normals") if isinstance(loaded, dict) else loaded
    return check_normals_array(normals, path)


def check_normals_array(normals: Any, source: str | os.PathLike) -> np.ndarray:
    """``normals`` as ``[N, H, W, 3]`` float32, or :class:`DataError` naming ``source`` and the shape found."""
    if not isinstance(normals, np.ndarray) or normals.ndim != 4 or normals.shape[-1] != 3:
        found = f"{normals.dtype} {normals.shape}" if isinstance(normals, np.ndarray) else type(normals).__name__
        raise DataError(f"{source}: 'all_normals' is {found}; expected an [N, H, W, 3] array "
                        "(probe3d create_nyu_pkl.py transposes it (0, 3, 1, 2) to [N, 3, H, W])")
    return normals if normals.dtype == np.float32 else normals.astype(np.float32)


def convert_normals_to_npy(root: str | os.PathLike) -> Path:
    """Write ``root/all_normals.npy`` (float32 ``[N, H, W, 3]``) from ``root/all_normals.pklz``; return its path."""
    root = Path(root)
    normals = read_normals_pklz(root / NORMALS_PKLZ_FILE)
    with atomic_output(root / NORMALS_NPY_FILE) as tmp, open(tmp, "wb") as file:
        np.save(file, normals, allow_pickle=False)
    return root / NORMALS_NPY_FILE


def open_normals(root: Path) -> np.ndarray:
    """``root/all_normals.npy`` memory-mapped when present, else ``root/all_normals.pklz`` read whole."""
    npy = root / NORMALS_NPY_FILE
    if npy.is_file():
        try:
            normals = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as error:
            raise DataError(f"cannot read {npy} as a .npy array: {error}; delete it and run "
                            "siglip2_dense.data.nyu_normals.convert_normals_to_npy again") from error
        if normals.dtype != np.float32 or normals.ndim != 4 or normals.shape[-1] != 3:
            raise DataError(f"{npy}: {normals.dtype} {normals.shape}; expected float32 [N, H, W, 3]")
        return normals
    return read_normals_pklz(root / NORMALS_PKLZ_FILE)


def read_sn40_indices(path: str | os.PathLike, count: int) -> np.ndarray:
    """The 1-based image indices an SN40 json lists (``int(img.split("_")[0])``), each in 1..count.

    probe3d data_processing/create_nyu_pkl.py:45-46 takes ``int(_ins["img"].split("_")[0]) - 1`` (0-based);
    1-based here, as ``splits.mat``.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"NYUv2 normals split file not found: {path} (train_SN40.json / test_SN40.json "
                               "from FAIR's nyuv2_surfacenormal_metadata.zip)")
    entries = read_json(path)
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected a non-empty JSON list of {{'img': '<index>_...'}} entries")
    indices = []
    for number, entry in enumerate(entries):
        name = entry.get("img") if isinstance(entry, dict) else None
        head = name.split("_")[0] if isinstance(name, str) else ""
        if not head.isdigit() or not 1 <= int(head) <= count:
            raise DataError(f"{path}: entry {number} has img {name!r}; expected '<1-based index>_...' with an "
                            f"index in 1..{count} (the number of images in the labeled .mat)")
        indices.append(int(head))
    return np.asarray(indices, np.int64)


def nyu_normals_item(normals: np.ndarray, raw_depth: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` normals zeroed where ``raw_depth`` is not in (0, 10] metres (Probe3D's mask), float32."""
    valid = (raw_depth > 0) & (raw_depth <= MAX_RAW_DEPTH)
    return np.where(valid[..., None], np.asarray(normals, np.float32), np.float32(0)).astype(np.float32)
