"""tools/train.py, stopped for good at one chosen moment of writing its files, so a test can SIGKILL it there.

    python tests/training/paused_training.py <pause point> <marker file> --config ... <overrides>

When the run reaches the pause point it writes ``<marker file>`` and sleeps; the test waits for the
marker and kills the process, which is then exactly as if the machine had died at that moment. The
points (step 8 is the second checkpoint of the test configuration, step 12 its last validation)::

    model_written      step 8's temporary directory holds model.safetensors, nothing else yet
    before_rename      step 8's temporary directory is complete and on disk, not yet renamed into place
    deleting_previous  step 8 is in place; the first file of step 4 has been deleted, the rest not yet
    best_moved_aside   the validation of step 12 improved: the old best/ is moved aside, the new one not in
"""

from __future__ import annotations

import os
import runpy
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import siglip2_dense.files as files
import siglip2_dense.training.checkpoint as checkpoint

ROOT = Path(__file__).resolve().parents[2]
POINTS = ("model_written", "before_rename", "deleting_previous", "best_moved_aside")


class ModuleWith:
    """A stand-in for a module: its own functions where given, the module's otherwise."""

    def __init__(self, module: Any, **functions: Any) -> None:
        self._module = module
        self.__dict__.update(functions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def pause_here(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(600)


def install(point: str, marker: Path) -> None:
    """Make the checkpoint and best-model writers stop at ``point``."""
    if point == "model_written":
        real_save_file = checkpoint.save_file

        def save_file(tensors: Any, filename: str, *args: Any, **kwargs: Any) -> None:
            if ".step_00000008.tmp" in filename and filename.endswith("optimizer.safetensors"):
                pause_here(marker)
            real_save_file(tensors, filename, *args, **kwargs)

        checkpoint.save_file = save_file
    elif point == "before_rename":
        real_fsync_tree = checkpoint.fsync_tree

        def fsync_tree(directory: Path) -> None:
            real_fsync_tree(directory)
            if ".step_00000008.tmp" in directory.name:
                pause_here(marker)

        checkpoint.fsync_tree = fsync_tree
    elif point == "deleting_previous":
        def rmtree(path: Any, *args: Any, **kwargs: Any) -> None:
            path = Path(path)
            if path.name == "step_00000004":
                first = sorted(path.iterdir())[0]
                first.unlink()
                pause_here(marker)
            shutil.rmtree(path, *args, **kwargs)

        checkpoint.shutil = ModuleWith(shutil, rmtree=rmtree)
    elif point == "best_moved_aside":
        def replace(source: Any, destination: Any) -> None:
            os.replace(source, destination)
            if Path(source).name == "best" and Path(destination).name == ".best.old":
                pause_here(marker)

        files.os = ModuleWith(os, replace=replace)
    else:
        raise SystemExit(f"unknown pause point {point!r}; valid points: {', '.join(POINTS)}")


if __name__ == "__main__":
    install(sys.argv[1], Path(sys.argv[2]))
    sys.argv = [str(ROOT / "tools" / "train.py"), *sys.argv[3:]]
    runpy.run_path(sys.argv[0], run_name="__main__")
