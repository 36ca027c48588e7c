"""The files a run writes besides its checkpoints: ``log.jsonl`` and the best model.

- ``log.jsonl``: one JSON object per line -- a ``start`` record per (re)start, training records
  ``{"step", "loss", "head_losses", "lr", "images_per_s", "epoch", "batch_in_epoch"}`` and validation
  records ``{"step", "metrics": [per head], "best", "seconds"}`` (seconds: the validation's wall
  time). A resumed run first drops the records of steps after its checkpoint (written by the run
  that crashed), so the log reads as one run.
- ``best/``: the best head so far as a ``DenseModel`` directory (``dense_model.json``,
  ``head.safetensors`` [, ``backbone.safetensors``]) plus ``metrics.json``; written under a
  temporary name and swapped into place (:func:`recover_best_model` tidies up after a kill).
- ``final/``: with ``train.reported_checkpoint: final`` instead of ``best/``: the model after the last
  step (of a grid, the head best at the last validation), the one DINOv2 and DINOv3 report
  (DINOv2's ADE20K config validates every 10000 steps without ``save_best``; DINOv3's depth
  train.py returns the last model), in the same layout.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from siglip2_dense.errors import DataError
from siglip2_dense.files import replace_directory, restore_moved_aside, write_json, write_text_atomic
from siglip2_dense.head_grid import HeadGrid, backbone_with_layers
from siglip2_dense.model import DenseModel

BEST_DIR = "best"
FINAL_DIR = "final"
MODEL_DIRS = {"best": BEST_DIR, "final": FINAL_DIR}  # train.reported_checkpoint -> folder


class JsonLinesLog:
    """Append JSON records to ``path``, one per line, flushed at once.

    Args:
        keep_up_to_step: drop existing records whose ``step`` is larger (a resumed run's future).
    """

    def __init__(self, path: Path, keep_up_to_step: int = 0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            kept = [line for line, record in read_records(self.path) if record.get("step", 0) <= keep_up_to_step]
            text = "".join(line + "\n" for line in kept)
            write_text_atomic(self.path, text)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
            stream.flush()
            os.fsync(stream.fileno())


def read_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, record)`` of each line of a JSON-lines log; a last line cut short by a kill is left out.

    Raises:
        DataError: a line other than the last is not a JSON object.
    """
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if number == len(lines):
                break  # the write the kill interrupted
            raise DataError(f"{path} line {number} is not a JSON record: {line[:80]!r}; fix or delete that line")
        records.append((line, record))
    return records


def save_best_model(output_dir: Path, grid: HeadGrid, head: int, record: dict[str, Any], name: str = BEST_DIR) -> Path:
    """Save head ``head`` of ``grid`` (with the layers it reads) as ``<output_dir>/<name>`` + ``metrics.json``
    (``name``: ``best`` or ``final``).

    The backbone is recorded as ``DenseModel.save_pretrained`` records it (absolute, and relative to
    ``best/`` when it lies under ``output_dir``). The temporary folder is a sibling of ``best/``, so a
    relative path recorded from it holds after the swap.
    """
    tmp = output_dir / f".{name}.tmp-{os.getpid()}"
    backbone = backbone_with_layers(grid.backbone, grid.positions[head])
    DenseModel(backbone, grid.heads[head]).save_pretrained(tmp)
    write_json(tmp / "metrics.json", record, indent=1)
    final = output_dir / name
    replace_directory(tmp, final)
    return final


def recover_best_model(output_dir: Path) -> None:
    """After a kill during :func:`save_best_model`: put the previous ``best/`` (or ``final/``) back if the
    kill came mid-swap, and delete half-written temporary copies."""
    for name in MODEL_DIRS.values():
        restore_moved_aside(output_dir / name)
        for stale in output_dir.glob(f".{name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
