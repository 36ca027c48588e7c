"""An evaluation's results as files: ``metrics.json`` for programs and ``metrics.txt`` for people.

``metrics.json`` (``format_version`` 1)::

    {
      "format": "siglip2-dense/eval-metrics", "format_version": 1,
      "name": str,                        the experiment's name
      "task": "segmentation" | "depth" | "normals",
      "model": {"kind": "dense", "checkpoint": str, "backbone": str, "head": str}
             | {"kind": "open_vocab", "checkpoint": str, "templates": ..., "variant": str,
                "background_threshold": float | null},
      "data": {"dataset": str, "root": str, "split": str, "num_images": int},
      "eval": {"mode", "crop_size", "stride", "flip", "scales", "max_num_patches"[, "depth_crop"]},
      "metrics": segmentation: {"mIoU", "mAcc", "aAcc": percent, "IoU", "Acc": [K] percent}
                 depth: {"d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog",
                         "num_images", "skipped"},
      "class_names": [K] str                         (segmentation)
      "labels": [K] str                              (zero-shot: the prompts, synonyms included)
    }

Numbers are the evaluator's ``compute()`` unrounded; undefined ones (NaN: a class with no union,
no labelled pixel) are ``null``. Nothing in it depends on the number of processes or the time
taken, so runs on 1 and N processes write the same file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from siglip2_dense.files import write_text_atomic

FORMAT_NAME = "siglip2-dense/eval-metrics"
FORMAT_VERSION = 1
METRICS_JSON = "metrics.json"
METRICS_TEXT = "metrics.txt"
DEPTH_COLUMNS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog")
NORMALS_COLUMNS = ("mean", "median", "rmse", "within_11.25", "within_22.5", "within_30")


def json_safe(value: Any) -> Any:
    """``value`` with NaN / infinities replaced by None, tuples by lists (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def metrics_record(**sections: Any) -> dict[str, Any]:
    """The ``metrics.json`` content: the format header, then ``sections`` (see the module docstring)."""
    return json_safe({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **sections})


def _number(value: float | None, width: int = 7, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:{width}.{digits}f}"


def segmentation_table(record: dict[str, Any]) -> str:
    """Per-class IoU and Acc with class names, then mIoU / mAcc / aAcc."""
    metrics, names = record["metrics"], record["class_names"]
    width = max([len("class"), *(len(name) for name in names)])
    lines = [f"{'#':>4}  {'class':<{width}}  {'IoU':>7}  {'Acc':>7}"]
    for k, (name, iou, acc) in enumerate(zip(names, metrics["IoU"], metrics["Acc"])):
        lines.append(f"{k:>4}  {name:<{width}}  {_number(iou)}  {_number(acc)}")
    lines.append(f"mIoU {_number(metrics['mIoU'], 0)}   mAcc {_number(metrics['mAcc'], 0)}   "
                 f"aAcc {_number(metrics['aAcc'], 0)}   (percent; '-' = undefined: IoU of a class in neither "
                 "prediction nor ground truth, Acc of a class not in the ground truth)")
    return "\n".join(lines)


def depth_table(record: dict[str, Any]) -> str:
    """The nine depth metrics in one row, then the image counts."""
    metrics = record["metrics"]
    header = "  ".join(f"{name:>8}" for name in DEPTH_COLUMNS)
    row = "  ".join(_number(metrics[name], 8, 4) for name in DEPTH_COLUMNS)
    return f"{header}\n{row}\nimages evaluated: {metrics['num_images']} (skipped, no valid pixel: {metrics['skipped']})"


def normals_table(record: dict[str, Any]) -> str:
    """Angular errors (degrees) and % within the thresholds, per image averaged (Probe3D) and pixel-pooled."""
    metrics = record["metrics"]
    lines = [f"{'':>9}  " + "  ".join(f"{name:>12}" for name in NORMALS_COLUMNS)]
    for label, prefix in (("per image", ""), ("pixels", "pixel_")):
        lines.append(f"{label:>9}  " + "  ".join(_number(metrics[prefix + name], 12, 3) for name in NORMALS_COLUMNS))
    lines.append(f"images evaluated: {metrics['num_images']} (skipped, no valid pixel: {metrics['skipped']})")
    return "\n".join(lines)


TABLES = {"segmentation": segmentation_table, "depth": depth_table, "normals": normals_table}


def format_table(record: dict[str, Any]) -> str:
    """``metrics.txt``: a title line (experiment, split, model, protocol), then the task's table."""
    data, evaluation, model = record["data"], record["eval"], record["model"]
    protocol = evaluation["mode"]
    if protocol == "slide":
        protocol += f" {evaluation['crop_size']} stride {evaluation['stride']}"
    if evaluation.get("flip") or evaluation.get("scales") != [1.0]:
        protocol += f", flip={evaluation['flip']} scales={evaluation['scales']}"
    title = (f"{record['name']}: {data['dataset']} {data['split']} ({data['num_images']} images), "
             f"{model['kind']} model {model['checkpoint']}, {protocol}")
    table = TABLES[record["task"]](record)
    return f"{title}\n{table}\n"


def write_metrics_files(directory: str | Path, record: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.txt`` into ``directory`` (created), each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_text = json.dumps(record, indent=1, allow_nan=False) + "\n"
    json_path, text_path = directory / METRICS_JSON, directory / METRICS_TEXT
    write_text_atomic(json_path, json_text)
    write_text_atomic(text_path, format_table(record))
    return json_path, text_path
