"""Resumable training checkpoints that survive a crash, with no pickle anywhere.

One checkpoint is one directory, written under a temporary name and renamed into place when
every file is on disk, so a directory named ``step_<8 digits>`` is complete by construction (its
``manifest.json``, written last, lists each file's size and is checked again on load)::

    <output_dir>/checkpoints/step_00004000/
        model.safetensors      heads.<g>.<key>: every head's state dict; backbone.<name>: tuned backbone parameters
        optimizer.safetensors  state.<param index>.<name>: AdamW's tensors (exp_avg, exp_avg_sq, step)
        optimizer.json         param_groups (lr, betas, weight_decay, params, ...) and non-tensor state
        scheduler.json         the LambdaLR state (last_epoch, base_lrs, ...)
        rng.safetensors        torch.<rank>, cuda.<rank>.<device>: every process's torch RNG states
        rng.json               python / numpy RNG states of every process
        trainer_state.json     step, epoch, batch in epoch, seed, world size, best metric so far, grid
        config.yaml            the resolved experiment config
        manifest.json          file names and sizes (written last)

Data order needs no state of its own: it is a function of (seed, step) (:mod:`.data_order`);
``trainer_state.json`` records epoch and position for people and is checked on resume.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from siglip2_dense.errors import CheckpointError, MissingFileError
from siglip2_dense.files import (
    MANIFEST,
    fsync_tree,
    manifest_is_complete,
    replace_directory,
    write_json,
    write_manifest,
    write_text_atomic,
)
from siglip2_dense.files import read_json as read_json_file
from siglip2_dense.head_grid import load_trained_tensors, trained_tensors
from siglip2_dense.model import read_safetensors

CHECKPOINTS_DIR = "checkpoints"
STEP_DIR = re.compile(r"^step_(\d{8})$")


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


# --- RNG states ------------------------------------------------------------------------------


def capture_rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch (CPU + CUDA) RNG states: JSON values and uint8 tensors."""
    version, internal, gauss = random.getstate()
    name, keys, position, has_gauss, cached = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = state
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(position), int(has_gauss), float(cached)],
        "tensors": tensors,
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["tensors"]["torch"])
    cuda = sorted((int(k.split(".")[1]), v) for k, v in state["tensors"].items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda])


# --- optimizer state -------------------------------------------------------------------------


def split_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors for safetensors, everything else for JSON)."""
    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                other.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "state": other}


def join_optimizer_state(tensors: dict[str, torch.Tensor], other: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in other["state"].items()}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": other["param_groups"]}


# --- writing ---------------------------------------------------------------------------------


def stale_checkpoint_dirs(root: Path, step: int) -> list[Path]:
    """What a run killed while writing or deleting checkpoints left in ``root``: temporary and moved-aside
    directories, and ``step_*`` directories older than ``step`` that are no longer complete."""
    stale = [*root.glob(".step_*.tmp-*"), *root.glob(".step_*.old")]
    for path in root.iterdir():
        match = STEP_DIR.match(path.name)
        if match and int(match.group(1)) < step and path.is_dir() and not is_complete(path):
            stale.append(path)
    return sorted(stale)


def save_checkpoint(
    output_dir: Path,
    step: int,
    grid: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    config_yaml: str,
    keep: int = 1,
) -> Path:
    """Write ``checkpoints/step_<step>`` (layout in the module docstring); keep the newest ``keep``.

    Args:
        grid: the unwrapped model (a ``HeadGrid``), never the DDP wrapper.
        rng_states: :func:`capture_rng_state` of every process, in rank order.
    """
    root = output_dir / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    for stale in stale_checkpoint_dirs(root, step):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    save_file(trained_tensors(grid), str(tmp / "model.safetensors"))
    optimizer_tensors, optimizer_other = split_optimizer_state(optimizer.state_dict())
    save_file(optimizer_tensors, str(tmp / "optimizer.safetensors"))
    write_json(tmp / "optimizer.json", optimizer_other, indent=1)
    write_json(tmp / "scheduler.json", scheduler.state_dict(), indent=1)  # lr_lambdas of plain functions are None
    rng_tensors = {f"{name}.{rank}" if name == "torch" else f"cuda.{rank}.{name.split('.')[1]}": value
                   for rank, state in enumerate(rng_states) for name, value in state["tensors"].items()}
    save_file({k: v.contiguous() for k, v in rng_tensors.items()}, str(tmp / "rng.safetensors"))
    write_json(tmp / "rng.json", {"python": [s["python"] for s in rng_states], "numpy": [s["numpy"] for s in rng_states]},
               indent=1)
    write_json(tmp / "trainer_state.json", {**trainer_state, "step": step}, indent=1)
    write_text_atomic(tmp / "config.yaml", config_yaml)
    write_manifest(tmp, step=step)
    fsync_tree(tmp)
    replace_directory(tmp, final)
    for stale in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


# --- finding and reading ---------------------------------------------------------------------


def is_complete(directory: Path) -> bool:
    """A ``step_*`` directory whose manifest lists files that are all there, with their sizes."""
    return manifest_is_complete(directory)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = output_dir / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name).group(1)))


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def load_checkpoint(
    directory: Path,
    grid: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int = 0,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Load weights, optimizer and scheduler state; return ``(trainer_state, this rank's RNG state or None)``.

    Raises:
        MissingFileError: no such directory.
        CheckpointError: incomplete directory, or weights that do not fit ``grid``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingFileError(f"checkpoint directory not found: {directory}")
    if not is_complete(directory):
        raise CheckpointError(f"{directory} is not a complete checkpoint (its {MANIFEST} is missing or wrong)")
    load_trained_tensors(grid, read_safetensors(directory / "model.safetensors"))
    optimizer_other = read_json(directory / "optimizer.json")
    optimizer_tensors = read_safetensors(directory / "optimizer.safetensors")
    try:
        optimizer.load_state_dict(join_optimizer_state(optimizer_tensors, optimizer_other))
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{directory}: the optimizer state does not fit this run's parameter groups: {error}") from error
    try:
        scheduler.load_state_dict(read_json(directory / "scheduler.json"))
        trainer_state = read_json(directory / "trainer_state.json")
        rng_json = read_json(directory / "rng.json")
        rng_tensors = read_safetensors(directory / "rng.safetensors")
        if rank >= len(rng_json["python"]):
            return trainer_state, None
        tensors = {"torch": rng_tensors[f"torch.{rank}"]}
        tensors.update({f"cuda.{k.split('.')[2]}": v for k, v in rng_tensors.items() if k.startswith(f"cuda.{rank}.")})
        return trainer_state, {"python": rng_json["python"][rank], "numpy": rng_json["numpy"][rank], "tensors": tensors}
    except (KeyError, TypeError, IndexError) as error:
        raise CheckpointError(f"{directory}: the scheduler, trainer or RNG state lacks an entry ({error!r}); "
                              "the checkpoint was written by another version or edited; resume from another one") from error


def read_json(path: Path) -> Any:
    """The JSON value in ``path``; a missing, unreadable or malformed file raises :class:`CheckpointError`."""
    return read_json_file(path, CheckpointError, "the checkpoint is corrupt, resume from another one")
