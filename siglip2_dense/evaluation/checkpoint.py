"""The trained model to evaluate, from either kind of folder a training run leaves.

- a ``DenseModel`` directory (``dense_model.json``): what ``DenseModel.save_pretrained`` writes,
  and a run's ``best/`` (the best head so far);
- a resumable step checkpoint (``checkpoints/step_<N>/``, with ``manifest.json``, ``config.yaml``
  and ``model.safetensors``): the run's last (or any) step. Its head grid is rebuilt from the
  saved config and one head is taken -- the one asked for, else the best so far when the run
  recorded one, else the only one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from siglip2_dense.errors import CheckpointError, MissingFileError, RequestError
from siglip2_dense.files import MANIFEST, manifest_is_complete, read_json
from siglip2_dense.model import (
    CONFIG_FILE,
    DenseModel,
    read_dense_model_config,
    read_safetensors,
    saved_backbone_location,
)

STEP_CONFIG_FILE = "config.yaml"
STEP_WEIGHTS_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.json"


def is_step_checkpoint(path: Path) -> bool:
    """A ``checkpoints/step_<N>`` folder written by training (it has a manifest and a config)."""
    return (path / MANIFEST).is_file() and (path / STEP_CONFIG_FILE).is_file()


def checkpoint_backbone(path: str | Path) -> str:
    """The backbone checkpoint (``name_or_path``) the model in ``path`` was trained on."""
    path = Path(path)
    check_model_folder(path)
    if (path / CONFIG_FILE).is_file():
        return saved_backbone_location(path, read_dense_model_config(path)["backbone"])
    return str(_step_config(path).model.backbone)


def check_model_folder(path: Path) -> None:
    """Raise :class:`MissingFileError` naming what was expected (and what is there) unless ``path`` holds a model."""
    if (path / CONFIG_FILE).is_file() or is_step_checkpoint(path):
        return
    hints = [str(p) for p in (path / "best", path / "final", path / "checkpoints") if p.exists()]
    hint = f"; this looks like a run folder: try {' or a step folder under '.join(hints)}" if hints else ""
    raise MissingFileError(
        f"{path} holds no model to evaluate: expected a DenseModel directory ({CONFIG_FILE}, e.g. a run's best/) "
        f"or a training step checkpoint (checkpoints/step_<N>/){hint}"
    )


def load_model_for_evaluation(
    path: str | Path, device: str | torch.device | None = None, head: int | None = None,
    dtype: torch.dtype | None = None,
) -> DenseModel:
    """The model in ``path`` (see the module docstring), in eval mode on ``device``.

    Args:
        head: step checkpoints only: which head of the grid (default: the run's best, or the only one).
        dtype: the backbone's weight dtype (the evaluation config's ``model.dtype`` / ``train.precision:
            fp32``); None: as loaded (bf16 on CUDA, float32 on CPU). The head stays float32.

    Raises:
        MissingFileError: ``path`` holds neither kind of model.
        CheckpointError: the weights do not fit; RequestError: ``head`` is out of range or given for a
            DenseModel directory.
    """
    path = Path(path)
    check_model_folder(path)
    if (path / CONFIG_FILE).is_file():
        if head is not None:
            raise RequestError(f"head={head}: {path} is a DenseModel directory with one head; leave head out")
        model = DenseModel.from_pretrained(path, device=device)
    else:
        model = _step_checkpoint_model(path, device, head)
    if dtype is not None:
        model.backbone.to(dtype)
    return model


def _step_config(path: Path):  # -> ExperimentConfig
    from siglip2_dense.config import config_from_yaml_text
    from siglip2_dense.errors import ConfigError
    from siglip2_dense.files import read_text_file

    config_file = path / STEP_CONFIG_FILE
    try:
        return config_from_yaml_text(read_text_file(config_file, "checkpoint config"))
    except ConfigError as error:
        raise CheckpointError(f"{config_file}: {error}") from error


def _step_checkpoint_model(path: Path, device: str | torch.device | None, head: int | None) -> DenseModel:
    from siglip2_dense.build import build_backbone, build_head_grid
    from siglip2_dense.head_grid import backbone_with_layers, load_trained_tensors

    if not manifest_is_complete(path):
        raise CheckpointError(f"{path} is an incomplete checkpoint (its manifest does not match its files)")
    config = _step_config(path)
    backbone = build_backbone(config, torch.device(device) if device is not None else torch.device("cpu"))
    grid = build_head_grid(config, backbone)
    load_trained_tensors(grid, read_safetensors(path / STEP_WEIGHTS_FILE))
    chosen = _chosen_head(path, head, grid.num_heads)
    return DenseModel(backbone_with_layers(backbone, grid.positions[chosen]), grid.heads[chosen]).eval()


def _chosen_head(path: Path, head: int | None, count: int) -> int:
    if head is not None:
        if not 0 <= head < count:
            raise RequestError(f"head={head}: {path} holds heads 0..{count - 1}")
        return head
    if count == 1:
        return 0
    state_path = path / TRAINER_STATE_FILE
    state = read_json(state_path, CheckpointError) if state_path.is_file() else None
    best = state.get("best") if isinstance(state, dict) else None
    if isinstance(best, dict) and isinstance(best.get("head"), int):
        return int(best["head"])
    raise RequestError(f"{path} holds {count} heads (an lr / layer grid) and no best one; choose one with head=")
