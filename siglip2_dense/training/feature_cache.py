"""Frozen-backbone features computed once, memory-mapped from disk, for fast probe training.

With a frozen backbone and a fixed set of training views (``data.train_views = V``: V seeded
augmented crops per image), a head sees the same features every epoch, so they are computed once
per view and cached. The cache lives in ``<cache root>/<key>/``, the key a SHA-256 over everything
that changes the features: backbone name, a hash of its weights, tapped layers, final norm,
dtype, patch budget, the data set's identity (type, root, split, file list), the view recipe
(seed, V, the augmentation settings) and the storage dtype. Layout::

    layer_<i>.npy      [V*N, C, h, w]  features of tapped layer i (float32 / float16; bfloat16 as uint16 bits)
    pooled.npy         [V*N, C]        the MAP-head embedding (when the backbone has one)
    grid_sizes.npy     [V*N, 2]        each view's (h, w) in patches
    targets.npy        [V*N, H, W]     the view's label map (uint8) or depth (float32 metres)
    manifest.json      key inputs, shapes, dtypes (written last; the folder is renamed into place)

Every process extracts every ``world_size``-th view into the shared arrays; rank 0 renames the
finished folder. Items are read lazily per process (memory maps are not pickled into workers).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from siglip2_dense.backbone.features import DenseFeatures, grid_mask
from siglip2_dense.config import ExperimentConfig
from siglip2_dense.data.collate import collate_padded
from siglip2_dense.data.order import SeededViews
from siglip2_dense.distributed import ProcessContext, barrier, broadcast_object
from siglip2_dense.errors import ConfigError, DataError
from siglip2_dense.evaluation.loop import TARGET_KEYS
from siglip2_dense.files import replace_directory, write_json

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORAGE = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16}


def weights_fingerprint(module: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of every tensor in ``module.state_dict()``."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{tuple(tensor.shape)}\0{tensor.dtype}\0".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def dataset_identity(dataset: Dataset) -> dict[str, Any]:
    """Type, root, split, length and a hash of the file list of a data set."""
    entries = next((getattr(dataset, a) for a in ("pairs", "samples", "indices") if hasattr(dataset, a)), None)
    listing = hashlib.sha256(repr([str(e) for e in entries]).encode()).hexdigest() if entries is not None else ""
    return {"type": type(dataset).__name__, "root": str(getattr(dataset, "root", "")),
            "split": str(getattr(dataset, "split", "")), "length": len(dataset), "files": listing}


def cache_inputs(backbone: nn.Module, views: SeededViews, config: ExperimentConfig) -> dict[str, Any]:
    """Everything the cached features depend on (hashed into the cache key, stored in the manifest)."""
    data = config.data
    return {
        "format_version": FORMAT_VERSION,
        "backbone": backbone.name_or_path,
        "weights": weights_fingerprint(backbone),
        "layers": list(backbone.layers),
        "norm": bool(backbone.norm),
        "backbone_dtype": str(next(backbone.parameters()).dtype),
        "max_num_patches": config.model.max_num_patches if backbone.is_naflex else None,
        "dataset": dataset_identity(views.dataset),
        "views": views.views,
        "seed": views.seed,
        "task": config.task,
        "augmentation": {k: getattr(data, k) for k in ("crop_size", "short_side", "scale_range", "cat_max_ratio",
                                                       "flip_prob", "photometric", "rotate_degrees", "colour_prob")}
        | ({"photometric_form": data.photometric_form} if data.photometric_form != "mmseg" else {}),
        "storage_dtype": config.train.feature_cache_dtype,
    }


def cache_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def to_storage(tensor: torch.Tensor, dtype_name: str) -> np.ndarray:
    """float tensor -> numpy array in the storage dtype (bfloat16 kept as its uint16 bit pattern)."""
    if dtype_name == "bfloat16":
        return tensor.to(torch.bfloat16).view(torch.int16).cpu().numpy().view(np.uint16)
    return tensor.to(getattr(torch, dtype_name)).cpu().numpy()


def from_storage(array: np.ndarray, dtype_name: str) -> torch.Tensor:
    """The inverse of :func:`to_storage`, as float32."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if dtype_name == "bfloat16":
        return tensor.view(torch.int16).view(torch.bfloat16).float()
    return tensor.float()


class CachedFeatures(Dataset):
    """The cached views, indexed by ``(index, epoch)`` keys like :class:`SeededViews` (the epoch is unused).

    Items (NumPy, in the storage dtype; :func:`collate_cached` makes float32 tensors): ``{"maps": [C_i, h, w]
    per layer, "grid_size": [2], "pooled": [C] or None, "target": [H, W], "storage_dtype": str}``.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        try:
            self.manifest = json.loads((self.directory / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"the feature cache {self.directory} is corrupt ({MANIFEST}: {error}); delete that folder "
                            "and the run computes the features again") from error
        self.storage_dtype = self.manifest["inputs"]["storage_dtype"]
        self._arrays: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self.manifest["count"])

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            names = [f"layer_{i}" for i in range(self.manifest["num_layers"])] + ["grid_sizes", "targets"]
            names += ["pooled"] if self.manifest["has_pooled"] else []
            self._arrays = {n: np.load(self.directory / f"{n}.npy", mmap_mode="r", allow_pickle=False) for n in names}
        return self._arrays

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index = key[0]
        arrays = self._open()
        maps = [np.array(arrays[f"layer_{i}"][index]) for i in range(self.manifest["num_layers"])]
        return {"maps": maps, "grid_size": np.array(arrays["grid_sizes"][index]),
                "pooled": np.array(arrays["pooled"][index]) if "pooled" in arrays else None,
                "target": np.array(arrays["targets"][index]), "storage_dtype": self.storage_dtype}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None}


def collate_cached(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Cached items -> ``{"features": DenseFeatures [B, ...] (float32), "target": [B, H, W]}``.

    Stacked with NumPy and converted once per batch (torch's parallel ``stack`` is slow on busy CPUs).
    """
    dtype_name = items[0]["storage_dtype"]
    grid_sizes = torch.from_numpy(np.stack([item["grid_size"] for item in items])).long()
    maps = [from_storage(np.stack([item["maps"][i] for item in items]), dtype_name) for i in range(len(items[0]["maps"]))]
    pooled = from_storage(np.stack([item["pooled"] for item in items]), dtype_name) if items[0]["pooled"] is not None else None
    mask = grid_mask(grid_sizes, maps[0].shape[-2], maps[0].shape[-1])
    return {"features": DenseFeatures(maps=maps, mask=mask, grid_sizes=grid_sizes, pooled=pooled),
            "target": torch.from_numpy(np.stack([item["target"] for item in items]))}


def _extract(backbone: nn.Module, images: list[np.ndarray], max_num_patches: int | None, autocast: Any) -> DenseFeatures:
    kwargs = {"max_num_patches": max_num_patches} if backbone.is_naflex else {}
    with torch.inference_mode(), autocast():
        return backbone(**backbone.preprocess(images, **kwargs))


def allocate_cache_files(
    directory: Path, count: int, shapes: dict[str, Any], dtype_name: str, target_key: str
) -> None:
    """Create the (empty) memory-mapped arrays of a cache of ``count`` views in a fresh ``directory``."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    storage = STORAGE[dtype_name]
    for i, shape in enumerate(shapes["maps"]):
        np.lib.format.open_memmap(directory / f"layer_{i}.npy", mode="w+", dtype=storage, shape=(count, *shape))
    if shapes["pooled"] is not None:
        np.lib.format.open_memmap(directory / "pooled.npy", mode="w+", dtype=storage, shape=(count, shapes["pooled"]))
    np.lib.format.open_memmap(directory / "grid_sizes.npy", mode="w+", dtype=np.int64, shape=(count, 2))
    target_dtype = np.uint8 if target_key == "mask" else np.float32
    np.lib.format.open_memmap(directory / "targets.npy", mode="w+", dtype=target_dtype, shape=(count, *shapes["target"]))


def build_feature_cache(
    backbone: nn.Module,
    views: SeededViews,
    config: ExperimentConfig,
    context: ProcessContext,
    cache_root: Path,
    autocast: Any,
    batch_size: int,
) -> CachedFeatures:
    """Open the cache of ``views`` through ``backbone``, computing it first if it is not on disk.

    Args:
        views: the fixed training views (``views.views > 0``).
        autocast: a callable returning the forward's autocast context.
        batch_size: images per extraction forward in each process.
    """
    if not backbone.frozen:
        raise ConfigError("train.feature_cache=true needs a frozen backbone (model.tune_last_blocks=0, "
                          "model.tune_attention=false)")
    if views.views < 1:
        raise ConfigError("train.feature_cache=true needs fixed views: set data.train_views to V >= 1")
    inputs = cache_inputs(backbone, views, config)
    directory = Path(cache_root) / cache_key(inputs)
    if (directory / MANIFEST).is_file():
        return CachedFeatures(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    target_key = TARGET_KEYS[config.task]
    count = len(views)
    mine = list(range(context.rank, count, context.world_size))
    loader = DataLoader(views, batch_size=batch_size, sampler=[(k, 0) for k in mine],
                        num_workers=config.data.num_workers, collate_fn=collate_padded)
    batches = iter(loader)
    first = next(batches, None)  # rank 0 always has one: count >= 1
    first_features = _extract(backbone, list(first["image"].permute(0, 2, 3, 1)), config.model.max_num_patches,
                              autocast) if first is not None else None
    if context.is_main:
        shapes = {"maps": [tuple(m.shape[1:]) for m in first_features.maps],
                  "pooled": first_features.pooled.shape[1] if first_features.pooled is not None else None,
                  "target": tuple(first[target_key].shape[1:])}
        allocate_cache_files(tmp, count, shapes, config.train.feature_cache_dtype, target_key)
    shapes = broadcast_object(shapes if context.is_main else None)
    barrier()
    arrays = {p.stem: np.load(p, mmap_mode="r+", allow_pickle=False) for p in tmp.glob("*.npy")}
    position = 0
    batch, features = first, first_features
    while batch is not None:
        indices = mine[position : position + len(batch["path"])]
        position += len(indices)
        if features is None:
            features = _extract(backbone, list(batch["image"].permute(0, 2, 3, 1)), config.model.max_num_patches,
                                autocast)
        if tuple(features.maps[0].shape[1:]) != tuple(shapes["maps"][0]):
            raise ConfigError(
                f"feature cache: view grids differ ({tuple(features.maps[0].shape[1:])} vs {shapes['maps'][0]}); "
                "the fixed views must all be data.crop_size"
            )
        for i, feature_map in enumerate(features.maps):
            arrays[f"layer_{i}"][indices] = to_storage(feature_map.float(), config.train.feature_cache_dtype)
        if features.pooled is not None:
            arrays["pooled"][indices] = to_storage(features.pooled.float(), config.train.feature_cache_dtype)
        arrays["grid_sizes"][indices] = features.grid_sizes.cpu().numpy()
        arrays["targets"][indices] = batch[target_key].numpy().astype(arrays["targets"].dtype)
        batch, features = next(batches, None), None
    for array in arrays.values():
        array.flush()
    del arrays
    barrier()
    if context.is_main:
        manifest = {"inputs": inputs, "count": count, "num_layers": len(shapes["maps"]),
                    "has_pooled": shapes["pooled"] is not None, "map_shapes": shapes["maps"],
                    "target_shape": shapes["target"]}
        write_json(tmp / MANIFEST, manifest, indent=1)
        replace_directory(tmp, directory)
    barrier()
    return CachedFeatures(directory)
