"""Write synthetic scenes (:mod:`siglip2_dense.data.synthetic`) in the real on-disk formats.

Scene ``i`` of a set written with seed ``S`` is ``make_scene(scene_seed(S, i), H, W)``, the same scene as
``SyntheticDataset(num, S, (H, W))[i]``. Scenes with ``i % 4 == 1`` form the evaluation split
(ADE20K ``validation``, NYUv2 ``test``, VOC / Context / Cityscapes ``val``, COCO ``val2017``), the others
the training split, so ``num >= 2`` gives both (:mod:`~siglip2_dense.data.scene_splits`).

- ``ade20k``: ``ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_<split>_<i:08d>.{jpg,png}``.
  Label PNG value = synthetic class + 1 (1 = background, 2 = "red circle", ...); 0 ("other" in ADE20K,
  ignored after ``reduce_zero_label``) is never written, so ``ADE20KDataset`` gives back the synthetic
  class indices exactly. ``class_names.txt`` (the 17 synthetic names) goes next to the two folders.
- ``nyu-bts``: ``sync/scene_<i//8:04d>/rgb_<i:05d>.jpg`` + ``sync_depth_<i:05d>.png`` (uint16 mm) for train,
  the same under ``official_splits/test/`` for test, and the two BTS file lists in the root (the train
  list with BTS's leading ``/``), focal = the scene camera's.
- ``nyu-mat``: ``nyu_depth_v2_labeled.mat`` (HDF5: ``images [N, 3, W, H]`` uint8, ``depths [N, W, H]``
  float32 metres, ``rawDepths`` the same with the sensor's holes (:func:`raw_depth_holes`: 0 there) and
  every value past 10 m as it is, ``labels [N, W, H]`` uint16 = synthetic class) and ``splits.mat`` (1-based
  ``trainNdxs`` / ``testNdxs`` column vectors; MATLAB v5 via scipy when installed, else HDF5); and the
  probing lineage's normals files (:mod:`~siglip2_dense.data.nyu_normals`): ``all_normals.pklz`` (gzip
  pickle of ``{"all_normals": [N, H, W, 3]}``, the scenes' exact normals) and ``{train,test}_SN40.json``
  (``[{"img": "<1-based index>_synthetic"}, ...]``, the same split as ``splits.mat``).
- ``folder``: ``images/<i:05d>.png``, ``masks/<i:05d>.png`` (synthetic class), ``class_names.txt`` and the
  split files ``training.txt`` / ``validation.txt`` (stems), for :class:`~siglip2_dense.data.folder.
  FolderSegmentationDataset` (all scenes) and ``data.dataset: folder`` (:func:`~siglip2_dense.data.folder.open_folder_split`).
- ``normals-folder``: ``{train,test}/images/<i:05d>.png``, ``normals/<i:05d>.png`` (the scene's exact normals,
  RGB-encoded, :mod:`~siglip2_dense.data.normals_png`) and ``depth/<i:05d>.png`` (uint16 mm), for
  :class:`~siglip2_dense.data.normals_folder.FolderNormalsDataset`.
- ``navi``: ``navi_v1/object_<i//4:03d>/{multiview-00-synthetic,wild_set,multiview-01-synthetic}/`` (scene
  ``i % 4`` = 0, 1 or 3, 2) with ``images/<i:03d>.jpg``, ``depth/<i:03d>.png`` (NAVI's encoded disparity,
  :func:`~siglip2_dense.data.navi.encode_navi_depth`, on the shapes only: NAVI's depth covers its object)
  and ``annotations.json`` (filename, camera q / t / focal_length / camera_model, image_size, split), for
  :class:`~siglip2_dense.data.navi.NAVIDataset`: the wild sets (scenes ``i % 4`` in 1, 3) are its test split.
- ``voc``, ``context``: ``VOCdevkit/VOC2012`` / ``VOCdevkit/VOC2010`` (:mod:`~siglip2_dense.data.write_pascal`).
- ``cocostuff``, ``cocoobject``: ``coco_stuff164k`` with raw and converted label maps, COCO-Object's
  ``_instanceTrainIds`` PNGs and ``instances_<split>.json`` (:mod:`~siglip2_dense.data.write_coco`).
- ``cityscapes``: ``cityscapes/{leftImg8bit,gtFine}`` (:mod:`~siglip2_dense.data.write_cityscapes`).
- ``ade847``, ``context459``: ``ADE20K_2021_17_01`` / ``VOCdevkit/VOC2010`` with CAT-Seg's 16-bit TIFF label
  maps (:mod:`~siglip2_dense.data.write_catseg`).
Each of those modules states its class mapping (synthetic class -> the value in the files).

Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.navi import encode_navi_depth
from siglip2_dense.data.normals_png import write_normals_png
from siglip2_dense.data.nyu import BTS_DATA_DIRS, BTS_LIST_FILES, LABELED_MAT_FILE, SPLITS_MAT_FILE
from siglip2_dense.data.nyu_normals import NORMALS_PKLZ_FILE, SN40_FILES
from siglip2_dense.data.scene_splits import Size, is_evaluation_scene, iter_scenes
from siglip2_dense.data.synthetic import CLASS_NAMES
from siglip2_dense.data.write_catseg import write_ade847, write_context459
from siglip2_dense.data.write_cityscapes import write_cityscapes
from siglip2_dense.data.write_coco import write_cocoobject, write_cocostuff
from siglip2_dense.data.write_pascal import write_context, write_voc
from siglip2_dense.errors import RequestError
from siglip2_dense.files import atomic_output, write_bytes_atomic

FORMATS = ("ade20k", "nyu-bts", "nyu-mat", "folder", "normals-folder", "navi", "voc", "context", "cocostuff", "cocoobject",
           "cityscapes", "ade847", "context459")


def write_ade20k(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/ADEChallengeData2016``; return that folder."""
    root = Path(out) / "ADEChallengeData2016"
    for index, scene in iter_scenes(num, seed, size):
        split, short = ("validation", "val") if is_evaluation_scene(index) else ("training", "train")
        stem = f"ADE_{short}_{index:08d}"
        write_rgb(root / "images" / split / f"{stem}.jpg", scene.image)
        write_png(root / "annotations" / split / f"{stem}.png", scene.mask + np.uint8(1))
    _write_class_names(root / "class_names.txt")
    return root


def write_nyu_bts(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes in the BTS layout under ``out``; return ``out``."""
    root = Path(out)
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for index, scene in iter_scenes(num, seed, size):
        split = "test" if is_evaluation_scene(index) else "train"
        folder = f"scene_{index // 8:04d}"
        rgb, depth = f"{folder}/rgb_{index:05d}.jpg", f"{folder}/sync_depth_{index:05d}.png"
        write_rgb(root / BTS_DATA_DIRS[split] / rgb, scene.image)
        write_png(root / BTS_DATA_DIRS[split] / depth, depth_to_millimetres(scene.depth))
        # BTS's train list starts its paths with '/', its test list does not
        lead = "/" if split == "train" else ""
        lines[split].append(f"{lead}{rgb} {lead}{depth} {scene.focal:.4f}")
    for split, split_lines in lines.items():
        write_bytes_atomic(root / BTS_LIST_FILES[split], ("\n".join(split_lines) + "\n").encode())
    return root


def write_nyu_mat(out: str | os.PathLike, num: int, seed: int = 0, size: Size = (64, 64)) -> Path:
    """Write ``num`` scenes as the labeled ``.mat`` plus ``splits.mat`` under ``out``; return ``out``.

    All scenes share one ``size``: the labeled file is one array.
    """
    if not isinstance(size[0], int):
        raise RequestError("the nyu-mat format stores one [N, 3, W, H] array: give a single (height, width)")
    root = Path(out)
    scenes = list(iter_scenes(num, seed, size))
    with atomic_output(root / LABELED_MAT_FILE) as tmp, h5py.File(tmp, "w") as mat:
        mat["images"] = np.stack([s.image.transpose(2, 1, 0) for _, s in scenes])  # [N, 3, W, H]
        mat["depths"] = np.stack([s.depth.T for _, s in scenes]).astype(np.float32)  # [N, W, H]
        mat["rawDepths"] = np.stack([np.where(raw_depth_holes(i, s.depth.shape), 0, s.depth).T
                                     for i, s in scenes]).astype(np.float32)
        mat["labels"] = np.stack([s.mask.T for _, s in scenes]).astype(np.uint16)  # [N, W, H]
    test = np.array([i + 1 for i, _ in scenes if is_evaluation_scene(i)], np.float64)[:, None]
    train = np.array([i + 1 for i, _ in scenes if not is_evaluation_scene(i)], np.float64)[:, None]
    write_splits_mat(root / SPLITS_MAT_FILE, train, test)
    normals = {"all_normals": np.stack([s.normals for _, s in scenes]).astype(np.float32)}  # [N, H, W, 3]
    write_bytes_atomic(root / NORMALS_PKLZ_FILE, gzip.compress(pickle.dumps(normals, protocol=2), mtime=0))
    for split, indices in (("train", train), ("test", test)):
        entries = [{"img": f"{int(i)}_synthetic"} for i in indices[:, 0]]
        write_bytes_atomic(root / SN40_FILES[split], json.dumps(entries).encode())
    return root


def raw_depth_holes(index: int, shape: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` bool: where scene ``index``'s ``rawDepths`` has no measurement (0), as the Kinect's holes:
    a block of an eighth of each side, at a corner that moves with the index."""
    height, width = shape
    holes = np.zeros(shape, bool)
    rows = slice(0, max(1, height // 8)) if index % 2 == 0 else slice(height - max(1, height // 8), height)
    cols = slice(0, max(1, width // 8)) if index % 3 == 0 else slice(width - max(1, width // 8), width)
    holes[rows, cols] = True
    return holes


def write_splits_mat(path: str | os.PathLike, train: np.ndarray, test: np.ndarray) -> None:
    """Write 1-based ``trainNdxs`` / ``testNdxs`` (``[M, 1]``): MATLAB v5 if scipy is installed, else HDF5."""
    with atomic_output(path) as tmp:
        try:
            from scipy.io import savemat
        except ImportError:
            with h5py.File(tmp, "w") as mat:
                mat["trainNdxs"], mat["testNdxs"] = train, test
        else:
            savemat(tmp, {"trainNdxs": train, "testNdxs": test}, appendmat=False)


def write_folder(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/{images,masks}/<i:05d>.png``, ``out/class_names.txt`` and the split files
    ``out/{training,validation}.txt``; return ``out``."""
    root = Path(out)
    splits: dict[str, list[str]] = {"training": [], "validation": []}
    for index, scene in iter_scenes(num, seed, size):
        write_rgb(root / "images" / f"{index:05d}.png", scene.image)
        write_png(root / "masks" / f"{index:05d}.png", scene.mask)
        splits["validation" if is_evaluation_scene(index) else "training"].append(f"{index:05d}")
    _write_class_names(root / "class_names.txt")
    for split, stems in splits.items():
        write_bytes_atomic(root / f"{split}.txt", ("\n".join(stems) + "\n").encode())
    return root


def write_normals_folder(
    out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` scenes as ``out/{train,test}/{images,normals,depth}/<i:05d>.png``; return ``out``."""
    root = Path(out)
    for index, scene in iter_scenes(num, seed, size):
        folder = root / ("test" if is_evaluation_scene(index) else "train")
        write_rgb(folder / "images" / f"{index:05d}.png", scene.image)
        write_normals_png(folder / "normals" / f"{index:05d}.png", scene.normals)
        write_png(folder / "depth" / f"{index:05d}.png", depth_to_millimetres(scene.depth))
    return root


NAVI_COLLECTIONS = ("multiview-00-synthetic", "wild_set", "multiview-01-synthetic", "wild_set")


def write_navi(out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)) -> Path:
    """Write ``num`` scenes as ``out/navi_v1`` (the layout of google/navi's README); return that folder."""
    root = Path(out) / "navi_v1"
    annotations: dict[Path, list[dict]] = {}
    for index, scene in iter_scenes(num, seed, size):
        collection = root / f"object_{index // 4:03d}" / NAVI_COLLECTIONS[index % 4]
        write_rgb(collection / "images" / f"{index:03d}.jpg", scene.image)
        write_png(collection / "depth" / f"{index:03d}.png", encode_navi_depth(np.where(scene.mask > 0, scene.depth, 0)))
        annotations.setdefault(collection, []).append({
            "object_id": collection.parent.name, "filename": f"{index:03d}.jpg",
            "camera": {"q": [1.0, 0.0, 0.0, 0.0], "t": [0.0, 0.0, 0.0], "focal_length": float(scene.focal),
                       "camera_model": "synthetic"},
            "image_size": [int(scene.image.shape[0]), int(scene.image.shape[1])],
            "scene_name": NAVI_COLLECTIONS[index % 4], "split": "val" if index % 8 >= 4 else "train",
        })
    for collection, entries in annotations.items():
        write_bytes_atomic(collection / "annotations.json", json.dumps(entries, indent=1).encode())
    return root


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """``[H, W]`` float metres -> ``[H, W]`` uint16 millimetres, rounded (0 stays 0 = invalid)."""
    return np.clip(np.round(depth * 1000.0), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _write_class_names(path: Path) -> None:
    write_bytes_atomic(path, ("\n".join(CLASS_NAMES) + "\n").encode())


WRITERS = {
    "ade20k": write_ade20k, "nyu-bts": write_nyu_bts, "nyu-mat": write_nyu_mat, "folder": write_folder,
    "normals-folder": write_normals_folder, "navi": write_navi,
    "voc": write_voc, "context": write_context, "cocostuff": write_cocostuff, "cocoobject": write_cocoobject,
    "cityscapes": write_cityscapes, "ade847": write_ade847, "context459": write_context459,
}  # fmt: skip


def write_synthetic(
    format_name: str, out: str | os.PathLike, num: int, seed: int = 0, size: Size | Sequence[Size] = (64, 64)
) -> Path:
    """Write ``num`` synthetic scenes in ``format_name`` (one of :data:`FORMATS`); return the data set root."""
    if format_name not in WRITERS:
        raise RequestError(f"unknown format {format_name!r}; valid choices: {', '.join(FORMATS)}")
    return WRITERS[format_name](out, num, seed, size)
