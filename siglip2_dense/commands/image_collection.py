"""Which images ``siglip2-dense segment`` works on, where each one's outputs go, and which are done.

Inputs are files, folders (their images; sub-folders too with ``recursive``) and glob patterns
(``"photos/**/*.jpg"``, expanded here when the shell did not). Each image's outputs keep its path
relative to the inputs' common folder, so ``a/x.png`` and ``b/x.png`` write ``<out>/a/x_*`` and
``<out>/b/x_*``; two images of one folder that share a stem (``x.jpg``, ``x.png``) keep their suffix
in the name (``x_jpg``, ``x_png``). An image is done when its three outputs exist (each written
atomically) and its JSON lists the labels asked for; a rerun skips it. ``results.jsonl`` is built
from the per-image JSON files, one line per image in output order, so it is the same whichever
processes, batches or interrupted runs produced them.
"""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from siglip2_dense.errors import DataError, MissingFileError
from siglip2_dense.files import read_text_file, write_text_atomic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # as data.image_io's (a test checks)
OUTPUT_SUFFIXES = {"overlay": "_overlay.png", "label_map": "_labels.png", "json": ".json"}
RESULTS_FILE = "results.jsonl"
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class ImageJob:
    """One image to segment: ``source`` (as found) and ``output`` (its outputs' path under ``--out``, no suffix)."""

    source: Path
    output: Path

    def outputs(self, out: Path) -> dict[str, Path]:
        """The three output files of this image under ``out``, by kind (as ``OpenVocabResult.save`` names them)."""
        return {kind: out / self.output.parent / f"{self.output.name}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}


def collect_images(inputs: Sequence[str | os.PathLike], recursive: bool = False) -> list[ImageJob]:
    """Every image named by ``inputs`` (files, folders, glob patterns), once, sorted by output path.

    Raises:
        MissingFileError: an input is neither a file, a folder, nor a pattern that matches something.
        DataError: a folder or pattern holds no image (the suffixes looked for are listed).
    """
    found: list[Path] = []
    bases: list[Path] = []
    for given in inputs:
        path = Path(given).expanduser()
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            images = [p for p in path.glob(pattern) if _is_image(p)]
            bases.append(path.resolve())
            what = f"folder {path}" + (" (and its sub-folders)" if recursive else " (add --recursive for sub-folders)")
        elif path.is_file():
            images = [path]
            bases.append(path.resolve().parent)
            what = f"file {path}"
        elif _GLOB_CHARACTERS & set(str(given)):
            images = [Path(p) for p in glob.glob(str(path), recursive=recursive) if _is_image(Path(p))]
            bases.extend(p.resolve().parent for p in images)
            what = f"pattern {str(given)!r}"
        else:
            raise MissingFileError(f"no such image file or folder: {path}")
        if not images:
            raise DataError(f"{what} holds no image; looked for {', '.join(IMAGE_SUFFIXES)}")
        found.extend(images)
    unique = {p.resolve(): p for p in found}
    base = Path(os.path.commonpath(bases)) if bases else Path.cwd()
    jobs = [ImageJob(path, output) for path, output in zip(unique.values(), _output_paths(list(unique), base))]
    return sorted(jobs, key=lambda job: job.output.as_posix())


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _output_paths(resolved: list[Path], base: Path) -> list[Path]:
    """Each image's path relative to ``base`` without its suffix; the suffix kept where stems would collide."""
    relative = [p.relative_to(base) for p in resolved]
    stems = Counter(r.with_suffix("").as_posix() for r in relative)
    return [r.with_suffix("") if stems[r.with_suffix("").as_posix()] == 1
            else r.with_name(f"{r.stem}_{r.suffix.lstrip('.').lower()}") for r in relative]


def shard(jobs: Sequence[ImageJob], rank: int, world_size: int) -> list[ImageJob]:
    """This process's share: every ``world_size``-th job from ``rank`` (each job in exactly one share)."""
    return list(jobs[rank::world_size])


def is_done(job: ImageJob, out: Path, labels: Sequence[str]) -> bool:
    """True when ``job``'s three outputs exist and its JSON was made for exactly ``labels``."""
    paths = job.outputs(out)
    if not all(path.is_file() for path in paths.values()):
        return False
    try:
        coco = json.loads(read_text_file(paths["json"], "segmentation JSON"))
    except (ValueError, OSError):
        return False
    return [category.get("name") for category in coco.get("categories", [])] == list(labels)


def results_line(job: ImageJob, out: Path) -> dict[str, Any]:
    """One ``results.jsonl`` record, read back from the job's JSON: path, size ``[H, W]``, shares, files.

    ``shares`` maps every label (and the background, when one was assigned) to its fraction of the
    pixels, 0.0 for labels that found nothing.
    """
    paths = job.outputs(out)
    coco = json.loads(read_text_file(paths["json"], "segmentation JSON"))
    image = coco["images"][0]
    pixels = image["height"] * image["width"]
    areas = Counter()
    for annotation in coco["annotations"]:
        areas[annotation["category_id"]] += annotation["area"]
    names = [category["name"] for category in coco["categories"]]
    shares = {name: areas[k] / pixels for k, name in enumerate(names)}
    if coco.get("background_index") is not None:
        background = "<background>" if "background" in names else "background"
        shares[background] = (pixels - sum(areas.values())) / pixels
    return {
        "path": str(job.source), "size": [image["height"], image["width"]], "shares": shares,
        "rle": paths["json"].relative_to(out).as_posix(), "overlay": paths["overlay"].relative_to(out).as_posix(),
        "labels": paths["label_map"].relative_to(out).as_posix(),
    }


def write_results(jobs: Sequence[ImageJob], out: Path) -> Path:
    """Write ``<out>/results.jsonl``: one line per job (all of them done), in output order; return its path."""
    lines = [json.dumps(results_line(job, out), ensure_ascii=False) for job in jobs]
    path = out / RESULTS_FILE
    write_text_atomic(path, "".join(line + "\n" for line in lines))
    return path
