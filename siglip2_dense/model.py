"""DenseModel: a backbone and a head, saved as safetensors plus one JSON config.

A saved model is a directory::

    dense_model.json        what to rebuild (schema below)
    head.safetensors        the head's state dict (always)
    backbone.safetensors    the tuned backbone parameters (only when part of the backbone was tuned)

``dense_model.json``::

    {
      "format": "siglip2-dense/dense-model",
      "format_version": 1,
      "backbone": {"name_or_path": str, ["relative_path": str,] "layers": [int, ...], "norm": bool,
                   "freeze": bool, "tune_last_blocks": int, "tune_attention": bool,
                   "embed_dim": int, "num_blocks": int, "dtype": str},
      "head": {"name": str (a key of siglip2_dense.heads.HEADS), "config": {constructor arguments}},
      "weights": {"head": "head.safetensors", "backbone": "backbone.safetensors" | null}
    }

The frozen backbone is not copied: loading reads it again. ``name_or_path`` is a hub id (or
``timm:<name>``) as given, or a local folder as an absolute path, so the model loads from any
working directory; ``relative_path`` (only when that folder is inside this directory or beside it,
i.e. under the folder that holds it) is the same folder relative to this directory, so a moved or
copied tree still finds it. Loading tries the absolute path first, then the relative one;
``DenseModel.from_pretrained(directory, backbone=...)`` overrides both. ``embed_dim``,
``num_blocks`` and ``dtype`` are recorded for people and error messages. ``tune_attention`` (CAT-Seg's
attention-only tuning, see ``load_backbone``) is absent from files written before it existed: False.
``backbone.safetensors`` holds exactly the backbone parameters that train (``requires_grad``). The head is rebuilt
with ``in_channels`` taken from the rebuilt backbone, so a head trained on another width fails
loudly with the key names and both shapes. Keys are checked strictly both ways, and every file
is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.backbone.siglip import load_backbone
from siglip2_dense.errors import CheckpointError, MissingFileError
from siglip2_dense.files import atomic_output, write_json
from siglip2_dense.heads import build_head, head_name, upgrade_saved_head_config
from siglip2_dense.towers import looks_like_path

CONFIG_FILE = "dense_model.json"
HEAD_WEIGHTS_FILE = "head.safetensors"
BACKBONE_WEIGHTS_FILE = "backbone.safetensors"
FORMAT_NAME = "siglip2-dense/dense-model"
FORMAT_VERSION = 1
REQUIRED_CONFIG_KEYS = {
    "backbone": ("name_or_path", "layers", "norm", "freeze", "tune_last_blocks"),
    "head": ("name", "config"),
    "weights": ("head",),
}


class DenseModel(nn.Module):
    """A backbone followed by a dense head.

    ``forward(pixel_values, spatial_shapes, pixel_attention_mask=None, **head_inputs)`` takes the
    output of ``backbone.preprocess`` and returns the head's output on the padded patch grid:
    logits ``[B, K, Hmax, Wmax]`` or depth ``[B, 1, Hmax, Wmax]``, zero on padded cells. Extra
    keyword arguments go to the head. Features are cast to the head's dtype.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        if hasattr(head, "bind_backbone"):  # a head that reads the tower's own modules (cost aggregation)
            head.bind_backbone(backbone)

    def forward(
        self,
        pixel_values: torch.Tensor,
        spatial_shapes: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        **head_inputs: Any,
    ) -> torch.Tensor:
        features = self.backbone(pixel_values, spatial_shapes, pixel_attention_mask)
        return self.head(cast_features(features, head_dtype(self.head)), **head_inputs)

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the model to ``directory`` (created if needed); see the module docstring for the layout."""
        return save_dense_model(directory, self.backbone, self.head)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        backbone: str | os.PathLike | None = None,
    ) -> DenseModel:
        """Rebuild a saved model: backbone via ``load_backbone``, head via ``build_head``, strict weights.

        Args:
            directory: what :meth:`save_pretrained` wrote.
            device: where to put the model (default: CPU).
            dtype: the backbone's dtype (default: ``load_backbone``'s) and the head's (default float32).
            backbone: the backbone checkpoint to use instead of the recorded one (a local folder or a
                hub id), e.g. when the recorded folder is not on this machine.

        Returns:
            The model in eval mode.

        Raises:
            MissingFileError: the directory or one of its files is missing, or the recorded local
                backbone folder (see :func:`saved_backbone_location`).
            CheckpointError: unreadable config, unknown format, or weights whose keys or shapes do
                not match the rebuilt model (the keys and shapes are listed).
        """
        config = read_dense_model_config(directory)
        saved_backbone, saved_head, weights = config["backbone"], config["head"], config["weights"]
        location = saved_backbone_location(directory, saved_backbone) if backbone is None else os.fspath(backbone)
        backbone = load_backbone(
            location, layers=saved_backbone["layers"], norm=saved_backbone["norm"],
            freeze=saved_backbone["freeze"], tune_last_blocks=saved_backbone["tune_last_blocks"],
            tune_attention=bool(saved_backbone.get("tune_attention", False)), dtype=dtype, device=device,
        )
        saved_config = upgrade_saved_head_config(saved_head["name"], saved_head["config"])  # older keywords
        head_config = {**saved_config, "in_channels": list(backbone.out_channels)}
        head = build_head(saved_head["name"], **head_config)
        head.to(device=backbone_device(backbone), dtype=dtype or torch.float32)
        load_strict(head, read_safetensors(Path(directory) / weights["head"]), "head", saved_head["config"])
        if weights.get("backbone"):
            tuned = tuned_parameters(backbone)
            saved = read_safetensors(Path(directory) / weights["backbone"])
            check_keys_and_shapes(saved, {k: p.shape for k, p in tuned.items()}, "backbone (tuned parameters)")
            with torch.no_grad():
                for key, parameter in tuned.items():
                    parameter.copy_(saved[key])
        return cls(backbone, head).eval()


# --- features --------------------------------------------------------------------------------


def head_dtype(head: nn.Module) -> torch.dtype:
    """The dtype of the head's first floating-point parameter (float32 if it has none)."""
    return next((p.dtype for p in head.parameters() if p.is_floating_point()), torch.float32)


def backbone_device(backbone: nn.Module) -> torch.device:
    return next(backbone.parameters()).device


def cast_features(features: DenseFeatures, dtype: torch.dtype) -> DenseFeatures:
    """``features`` with maps and pooled embedding in ``dtype`` (the same object when they already are)."""
    if all(m.dtype == dtype for m in features.maps) and (features.pooled is None or features.pooled.dtype == dtype):
        return features
    pooled = features.pooled.to(dtype) if features.pooled is not None else None
    return DenseFeatures(maps=[m.to(dtype) for m in features.maps], mask=features.mask,
                         grid_sizes=features.grid_sizes, pooled=pooled)


# --- what gets saved -------------------------------------------------------------------------


def tuned_parameters(backbone: nn.Module) -> dict[str, nn.Parameter]:
    """The backbone parameters that train (``requires_grad``), by state-dict key."""
    return {name: p for name, p in backbone.named_parameters() if p.requires_grad}


def tuning_arguments(backbone: nn.Module) -> dict[str, Any]:
    """``freeze`` / ``tune_last_blocks`` / ``tune_attention`` that make ``load_backbone`` tune what
    ``backbone`` tunes."""
    if getattr(backbone, "tune_attention", False):
        return {"freeze": True, "tune_last_blocks": 0, "tune_attention": True}
    first = int(backbone.first_tuned_block)
    if first == 0:
        return {"freeze": False, "tune_last_blocks": 0, "tune_attention": False}
    return {"freeze": True, "tune_last_blocks": int(backbone.num_blocks) - first, "tune_attention": False}


def backbone_record(backbone: nn.Module, directory: str | os.PathLike | None = None) -> dict[str, str]:
    """Where ``backbone`` comes from, as ``dense_model.json`` records it (see the module docstring).

    A backbone read from a local folder (``backbone.checkpoint_dir``, set by ``load_backbone``) is
    recorded as that folder's absolute path, plus ``relative_path`` from ``directory`` when the
    folder lies under ``directory``'s parent (inside the model folder or beside it); anything else
    (a hub id, ``timm:<name>``) as given.
    """
    local = getattr(backbone, "checkpoint_dir", None)
    if not local:
        return {"name_or_path": backbone.name_or_path}
    record = {"name_or_path": os.path.abspath(local)}
    if directory is not None:
        model_dir = os.path.abspath(directory)
        holder = os.path.dirname(model_dir)
        if os.path.commonpath([record["name_or_path"], holder]) == holder:
            record["relative_path"] = Path(os.path.relpath(record["name_or_path"], model_dir)).as_posix()
    return record


def dense_model_config(
    backbone: nn.Module, head: nn.Module, directory: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The ``dense_model.json`` content for ``backbone`` + ``head`` (schema in the module docstring).

    ``directory``: where the file goes, for the backbone's ``relative_path`` (left out when None).
    """
    if not getattr(backbone, "name_or_path", ""):
        raise CheckpointError("the backbone has no name_or_path; load it with load_backbone so it can be rebuilt")
    if not isinstance(getattr(head, "config", None), dict):
        raise CheckpointError(f"head {type(head).__name__} has no config dict; it cannot be rebuilt by name")
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "backbone": {
            **backbone_record(backbone, directory),
            "layers": [int(i) for i in backbone.layers],
            "norm": bool(backbone.norm),
            **tuning_arguments(backbone),
            "embed_dim": int(backbone.embed_dim),
            "num_blocks": int(backbone.num_blocks),
            "dtype": str(next(backbone.parameters()).dtype).removeprefix("torch."),
        },
        "head": {"name": head_name(head), "config": head.config},
        "weights": {"head": HEAD_WEIGHTS_FILE, "backbone": BACKBONE_WEIGHTS_FILE if backbone.tuned else None},
    }


def save_dense_model_config(directory: str | os.PathLike, backbone: nn.Module, head: nn.Module) -> Path:
    """Write ``dense_model.json`` for ``backbone`` + ``head`` into ``directory`` atomically; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    write_json(path, dense_model_config(backbone, head, directory), indent=2)
    return path


def save_dense_model(directory: str | os.PathLike, backbone: nn.Module, head: nn.Module) -> Path:
    """Write head weights, tuned backbone weights (if any), then the config; returns ``directory``.

    The config is written last, so a directory with a config is complete. A stale
    ``backbone.safetensors`` from an earlier save of a tuned model is removed when the backbone is
    now frozen.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dense_model_config(backbone, head, directory)
    head_tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    with atomic_output(directory / HEAD_WEIGHTS_FILE, durable=True) as tmp:
        save_file(head_tensors, str(tmp))
    if backbone.tuned:
        tensors = {k: p.detach().cpu().contiguous() for k, p in tuned_parameters(backbone).items()}
        with atomic_output(directory / BACKBONE_WEIGHTS_FILE, durable=True) as tmp:
            save_file(tensors, str(tmp))
    save_dense_model_config(directory, backbone, head)
    if config["weights"]["backbone"] is None:
        (directory / BACKBONE_WEIGHTS_FILE).unlink(missing_ok=True)
    return directory


# --- what gets loaded ------------------------------------------------------------------------


def read_dense_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``dense_model.json`` from ``directory``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; expected a directory written by DenseModel.save_pretrained")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot read {path}: {error}") from error
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path} is not a siglip2-dense model config (format {FORMAT_NAME!r} expected)")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {config.get('format_version')!r}; this version reads {FORMAT_VERSION}"
        )
    missing = [k for k in ("backbone", "head", "weights") if not isinstance(config.get(k), dict)]
    if missing:
        raise CheckpointError(f"{path} lacks the sections {missing}")
    missing = [f"{section}.{key}" for section, keys in REQUIRED_CONFIG_KEYS.items() for key in keys
               if key not in config[section]]
    if missing:
        raise CheckpointError(f"{path} lacks the keys {missing}; it was edited or written by another tool, "
                              "save the model again with DenseModel.save_pretrained")
    return config


def saved_backbone_location(directory: str | os.PathLike, saved_backbone: dict[str, Any]) -> str:
    """The backbone checkpoint to load for the ``backbone`` record of ``dense_model.json`` in ``directory``.

    A hub id or ``timm:<name>`` as recorded; a local folder at its absolute path if that exists, else
    at ``relative_path`` from ``directory``. Records written before ``relative_path`` existed may
    hold a relative ``name_or_path``: it is tried from the working directory, then from ``directory``.

    Raises:
        MissingFileError: the recorded local folder exists at none of those places; the message
            names them and the ``backbone=`` override.
    """
    name = str(saved_backbone["name_or_path"])
    relative = saved_backbone.get("relative_path")
    expanded = os.path.expanduser(name)
    if os.path.isabs(expanded):
        candidates = [expanded]
    elif not name.startswith("timm:") and (looks_like_path(name) or os.path.isdir(os.path.join(directory, name))):
        candidates = [expanded, os.path.join(os.fspath(directory), name)]
    else:
        candidates = []
    if relative:
        candidates.append(os.path.join(os.path.abspath(directory), relative))
    if not candidates:
        return name
    for candidate in candidates:
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    tried = " or ".join(repr(os.path.normpath(c)) for c in dict.fromkeys(candidates))
    raise MissingFileError(
        f"the backbone of {os.fspath(directory)!r} was saved from the local folder {name!r}, which is not here "
        f"(looked for {tried}); pass DenseModel.from_pretrained({os.fspath(directory)!r}, "
        "backbone='<its folder or hub id>') to load it from elsewhere"
    )


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise MissingFileError(f"{path} does not exist; the model directory is incomplete")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"cannot read {path}: {error}; the file is corrupt or truncated, "
                              "write it again (or resume from another checkpoint)") from error


def check_keys_and_shapes(saved: dict[str, torch.Tensor], expected: dict[str, torch.Size], what: str) -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and mis-shaped keys, if any."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    mismatched = [
        f"{key}: saved {tuple(saved[key].shape)}, model {tuple(expected[key])}"
        for key in sorted(set(saved) & set(expected))
        if tuple(saved[key].shape) != tuple(expected[key])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append("shape mismatches [" + "; ".join(mismatched) + "]")
    if problems:
        raise CheckpointError(f"{what} weights do not fit the model: " + ", ".join(problems))


def load_strict(head: nn.Module, saved: dict[str, torch.Tensor], what: str, saved_config: dict[str, Any]) -> None:
    """``head.load_state_dict(saved, strict=True)`` after a key and shape check with readable errors."""
    expected = {k: v.shape for k, v in head.state_dict().items()}
    try:
        check_keys_and_shapes(saved, expected, what)
    except CheckpointError as error:
        raise CheckpointError(
            f"{error} (head saved with in_channels={saved_config.get('in_channels')}, rebuilt with "
            f"in_channels={getattr(head, 'config', {}).get('in_channels')})"
        ) from None
    head.load_state_dict(saved, strict=True)
