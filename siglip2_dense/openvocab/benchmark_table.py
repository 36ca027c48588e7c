"""The training-free open-vocabulary table: eight benchmarks (and ADE-847, PC-459), one row per run, Markdown + JSON.

    python -m siglip2_dense.openvocab.benchmark_table --model google/siglip2-base-patch16-naflex \\
        --benchmarks all --variant naclip --pamr --data-root /data --out openvocab-table
    python -m siglip2_dense.cli eval-openvocab ...            (the same command)

Each benchmark runs with its registered protocol (:data:`siglip2_dense.data.benchmarks.BENCHMARKS`):
its class-name file with synonyms, the test-time resize ``Resize(scale=(2048, short_side),
keep_ratio=True)``, the sliding window (``--inference slide``, the lineage's 224 / 112) or one
NaFlex-native forward (``--inference native``), the 80 ImageNet templates, and on with-background
benchmarks the background threshold: a pixel whose best class probability is below it becomes class
0 (``seg_pred[seg_logits.max(0)[0] < prob_thd] = 0`` in wangf3014/SCLIP ``clip_segmentor.py``).
Scores are upsampled (bilinear) to the ground truth's size, PAMR (``--pamr``) runs there on the
resized image upsampled to the same size (sinahmr/NACLIP ``naclip.py``), and mIoU is mmsegmentation's
``IoUMetric`` (:class:`~siglip2_dense.evaluation.SegmentationEvaluator`).

Data: ``--data-root`` holds each data set in its usual folder (:data:`DATA_FOLDERS`), as
``tools/make_synthetic.py --out ROOT`` writes them; a benchmark whose folder is missing is skipped with
one line saying where to put it. ``--vocabulary synthetic`` scores the synthetic world's 17 class
names placed at the label each format writes them to (:mod:`siglip2_dense.data.write_formats`);
the other classes of the benchmark are never predicted.

Output: ``<out>/openvocab_table.json`` (every run: per-benchmark mIoU, mAcc, aAcc and per-class IoU)
and ``<out>/openvocab_table.md`` (the paper-style table: a column per benchmark, the average over
the eight of the SCLIP lineage when all ran, then ADE-847 and PC-459, outside that average). A run
whose ``--name`` already has a row replaces it; others are appended.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from siglip2_dense.data.benchmarks import (
    BENCHMARKS,
    ItemTransform,
    benchmark_class_names,
    benchmark_resize,
    build_benchmark_dataset,
    get_benchmark,
)
from siglip2_dense.data.synthetic import CLASS_NAMES
from siglip2_dense.data.write_catseg import ade847_label, context459_label
from siglip2_dense.errors import DataError, RequestError
from siglip2_dense.files import write_json, write_text_atomic

# column order and titles of the published tables (SCLIP / NACLIP README), averaged in "Avg"
AVERAGED = {"voc21": "VOC21", "context60": "PC60", "coco_object": "Object", "voc20": "VOC20",
            "cityscapes": "City", "context59": "PC59", "ade20k": "ADE", "coco_stuff": "Stuff"}
# after "Avg": the large vocabularies of CAT-Seg's table (its titles), not in the lineage's average
EXTRA_COLUMNS = {"ade847": "A-847", "context459": "PC-459"}
COLUMNS = {**AVERAGED, **EXTRA_COLUMNS}
# The trained open-vocabulary row of the SigLIP2 paper's Table 3 (CAT-Seg's benchmarks, in its column order)
TABLE3 = {"ade847": "A-847", "context459": "PC-459", "ade20k": "A-150", "context59": "PC-59", "voc20": "VOC-20",
          "voc21": "VOC-21"}
DATA_FOLDERS = {
    "voc21": "VOCdevkit/VOC2012", "voc20": "VOCdevkit/VOC2012",
    "context60": "VOCdevkit/VOC2010", "context59": "VOCdevkit/VOC2010",
    "coco_object": "coco_stuff164k", "coco_stuff": "coco_stuff164k",
    "cityscapes": "cityscapes", "ade20k": "ADEChallengeData2016",
    "ade847": "ADE20K_2021_17_01", "context459": "VOCdevkit/VOC2010",
}
NUM_CLASSES = {"voc21": 21, "voc20": 20, "context60": 60, "context59": 59, "coco_object": 81,
               "coco_stuff": 171, "cityscapes": 19, "ade20k": 150, "ade847": 847, "context459": 459}
# label written for synthetic class k (write_pascal.py, write_coco.py, write_cityscapes.py, write_formats.py,
# write_catseg.py);
# None: the class is not a label of that benchmark (ignored background)
_BACKGROUND_TO_WALL_OTHER = 161  # write_coco.py WALL_OTHER_TRAIN_ID
SYNTHETIC_LABELS = {
    "voc21": lambda k: k, "context60": lambda k: k, "coco_object": lambda k: k, "cityscapes": lambda k: k,
    "ade20k": lambda k: k, "voc20": lambda k: None if k == 0 else k - 1,
    "context59": lambda k: None if k == 0 else k - 1,
    "coco_stuff": lambda k: _BACKGROUND_TO_WALL_OTHER if k == 0 else k - 1,
    "ade847": ade847_label, "context459": context459_label,
}
TABLE_JSON, TABLE_MARKDOWN = "openvocab_table.json", "openvocab_table.md"


def synthetic_vocabulary(name: str) -> list[str | None]:
    """The synthetic class names at the labels benchmark ``name``'s format writes them to; None elsewhere."""
    vocabulary: list[str | None] = [None] * NUM_CLASSES[name]
    for k, class_name in enumerate(CLASS_NAMES):
        label = SYNTHETIC_LABELS[name](k)
        if label is not None:
            vocabulary[label] = class_name
    return vocabulary


def benchmark_vocabulary(name: str, kind: str) -> list[str | None]:
    """``kind="benchmark"``: the class-name file with synonyms; ``"synthetic"``: :func:`synthetic_vocabulary`."""
    if kind == "synthetic":
        return synthetic_vocabulary(name)
    if kind == "benchmark":
        return list(benchmark_class_names(name))
    raise RequestError(f"vocabulary={kind!r}: expected 'benchmark' or 'synthetic'")


def resolve_benchmarks(text: str) -> list[str]:
    """``"all"``, ``"table3"`` (:data:`TABLE3`) or a comma-separated list of :data:`BENCHMARKS` names, in the
    table's column order."""
    named = {"all": list(COLUMNS), "table3": list(TABLE3)}
    names = named.get(text.strip()) or [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        get_benchmark(name)
    return [n for n in COLUMNS if n in names]


def class_probabilities(probabilities: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[K, H, W]`` probabilities of the named labels -> ``[num_classes, H, W]``; unnamed classes get -1
    (never the arg-max, never above a threshold)."""
    full = probabilities.new_full((num_classes, *probabilities.shape[1:]), -1.0)
    full[classes] = probabilities
    return full


def labels_from_probabilities(probabilities: torch.Tensor, background_threshold: float | None) -> torch.Tensor:
    """Arg-max over classes; with a threshold, pixels whose best probability is below it become class 0."""
    best, labels = probabilities.max(dim=0)
    if background_threshold is not None:
        labels = torch.where(best < background_threshold, torch.zeros_like(labels), labels)
    return labels


def benchmark_predictor(
    segmenter: Any,
    name: str,
    vocabulary: Sequence[str | None],
    background_threshold: float | None,
    inference: str = "slide",
    short_side: int | None = None,
    window: int | None = None,
    stride: int | None = None,
) -> Callable[[np.ndarray, tuple[int, int]], torch.Tensor]:
    """``(original image [H, W, 3] uint8, ground-truth size) -> [H', W'] long`` labels, benchmark ``name``'s protocol.

    ``short_side``, ``window``, ``stride``: departures from the registered protocol (None: the protocol's).
    Sets the segmenter's inference mode and window.
    """
    benchmark = get_benchmark(name)
    named = [i for i, label in enumerate(vocabulary) if label]
    embedded = segmenter.encode_labels([vocabulary[i] for i in named])
    classes = torch.tensor(named)
    resize = benchmark_resize(short_side or benchmark.short_side)
    segmenter.inference = inference
    segmenter.crop, segmenter.stride = (window or benchmark.window,) * 2, (stride or benchmark.stride,) * 2

    def predict(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        resized = resize({"image": image})["image"]
        scores = segmenter.image_probabilities(resized, embedded)  # [S, h, w] window scores
        scores = F.interpolate(scores[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        if segmenter.pamr_iterations:
            pixels = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float()
            pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
            resized = pixels[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        probabilities = segmenter.postprocess(scores, resized, embedded.label_index)
        full = class_probabilities(probabilities, classes, len(vocabulary))
        return labels_from_probabilities(full, background_threshold)

    return predict


def benchmark_metrics(
    segmenter: Any,
    name: str,
    root: str | Path,
    vocabulary: Sequence[str | None],
    background_threshold: float | None,
    inference: str = "slide",
    max_images: int | None = None,
    progress: bool = False,
    short_side: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    transform: ItemTransform | None = None,
    ignore_index: int | None = None,
) -> tuple[dict[str, Any], int]:
    """One benchmark with its protocol (:func:`benchmark_predictor`) on the data under ``root``, unrounded.

    Args:
        transform: applied to each item before prediction (``{"image", "mask", "path"}`` at the original
            size), e.g. a label mapping that scores one layout's images as another layout labels them.
        ignore_index: the label left out of the metrics; None: the data set's own (``ignore_index``: 255, or
            65535 for ADE-847 and PC-459, whose 847 / 459 classes include 255). Give it when ``transform``
            relabels the masks with another ignore value.

    Returns:
        The evaluator's ``compute()`` (``mIoU``, ``mAcc``, ``aAcc`` percent; ``IoU``, ``Acc`` ``[K]``) and the
        number of images.
    """
    from siglip2_dense.evaluation import SegmentationEvaluator
    from siglip2_dense.evaluation.loop import evaluate_images

    dataset = build_benchmark_dataset(name, root, transform=transform)
    if ignore_index is None:
        ignore_index = int(getattr(dataset, "ignore_index", 255))
    if max_images is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(max_images, len(dataset))))
    predict = benchmark_predictor(segmenter, name, vocabulary, background_threshold, inference, short_side,
                                  window, stride)
    evaluator = SegmentationEvaluator(num_classes=len(vocabulary), ignore_index=ignore_index)
    metrics = evaluate_images(predict, dataset, evaluator, "segmentation", torch.device("cpu"), progress=progress,
                              description=name)
    return metrics, len(dataset)


def run_benchmark(
    segmenter: Any,
    name: str,
    root: str | Path,
    vocabulary: Sequence[str | None],
    background_threshold: float | None,
    inference: str = "slide",
    max_images: int | None = None,
    progress: bool = False,
    short_side: int | None = None,
    window: int | None = None,
    stride: int | None = None,
    transform: ItemTransform | None = None,
    ignore_index: int | None = None,
) -> dict[str, Any]:
    """:func:`benchmark_metrics` as a table entry.

    Returns:
        ``{"mIoU", "mAcc", "aAcc", "IoU": {class: value}, "num_images"}`` (percent, 4 decimals; None for no union).
    """
    metrics, num_images = benchmark_metrics(segmenter, name, root, vocabulary, background_threshold, inference,
                                            max_images, progress, short_side, window, stride, transform,
                                            ignore_index)
    names = [label or f"class {i}" for i, label in enumerate(vocabulary)]
    per_class = {n: _number(v) for n, v in zip(names, metrics["IoU"])}
    return {"mIoU": _number(metrics["mIoU"]), "mAcc": _number(metrics["mAcc"]), "aAcc": _number(metrics["aAcc"]),
            "IoU": per_class, "num_images": num_images}


def _number(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 4)


# --- the table ---------------------------------------------------------------------------------------

def row_average(results: dict[str, Any]) -> float | None:
    """The average mIoU over the eight benchmarks of :data:`AVERAGED`, None unless all eight ran."""
    values = [results.get(n, {}).get("mIoU") for n in AVERAGED]
    return None if any(v is None for v in values) else round(sum(values) / len(values), 2)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The paper-style table: one row per run, a column per benchmark of :data:`AVERAGED` (mIoU, 1 decimal),
    their Avg, then the :data:`EXTRA_COLUMNS`."""
    header = "| run | " + " | ".join([*AVERAGED.values(), "Avg", *EXTRA_COLUMNS.values()]) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 2) + "|"]
    for row in rows:
        cells = [_cell(row["results"].get(name, {}).get("mIoU")) for name in AVERAGED]
        cells.append(_cell(row_average(row["results"])))
        cells += [_cell(row["results"].get(name, {}).get("mIoU")) for name in EXTRA_COLUMNS]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def write_table(out: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``row`` to the table under ``out`` (replacing a row of the same name); write JSON and Markdown."""
    path = out / TABLE_JSON
    rows: list[dict[str, Any]] = []
    if path.is_file():
        try:
            rows = json.loads(path.read_text())["rows"]
        except (ValueError, KeyError) as error:
            raise DataError(f"{path} is not a table this command wrote ({error}); move it or pick another --out") from error
    rows = [r for r in rows if r["name"] != row["name"]] + [row]
    write_json(path, {"columns": COLUMNS, "rows": rows})
    write_text_atomic(out / TABLE_MARKDOWN, markdown_table(rows))
    return rows


# --- the command -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from siglip2_dense.heads.openvocab_attention import VARIANTS

    parser = argparse.ArgumentParser(prog="siglip2-dense eval-openvocab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="google/siglip2-base-patch16-naflex",
                        help="SigLIP / SigLIP2 or CLIP checkpoint (hub id or folder)")
    parser.add_argument("--benchmarks", default="all",
                        help=f"'all', 'table3' (the SigLIP2 paper's Table 3: {', '.join(TABLE3)}) or a comma-separated "
                             f"list of {', '.join(COLUMNS)}")
    parser.add_argument("--variant", choices=VARIANTS, default="plain", help="last-block variant (default plain)")
    parser.add_argument("--head", default=None,
                        help="a trained open-vocabulary head's folder (tools/train.py's best/ or final/, e.g. "
                             "cost_aggregation) on --model's towers; --variant, --templates, --proxy then do not apply")
    parser.add_argument("--map-mlp", action=argparse.BooleanOptionalAction, default=None,
                        help="keep the MAP head's MLP step (default: the variant's own)")
    parser.add_argument("--pamr", action="store_true", help="PAMR post-processing (10 iterations, dilations 8 and 16)")
    parser.add_argument("--proxy", default=None, help="proxyclip: the proxy backbone, e.g. timm:vit_base_patch14_dinov2")
    parser.add_argument("--data-root", required=True, help="folder holding the data sets (see DATA_FOLDERS)")
    parser.add_argument("--inference", choices=("slide", "native"), default="slide")
    parser.add_argument("--templates", default="imagenet80", help="single | imagenet80 (default, as the lineage)")
    parser.add_argument("--vocabulary", choices=("benchmark", "synthetic"), default="benchmark")
    parser.add_argument("--background-threshold", default=None,
                        help="override the registered threshold of with-background benchmarks: a probability or 'none'")
    parser.add_argument("--short-side", type=int, default=None,
                        help="override every benchmark's test-time short side (a departure from the protocol)")
    parser.add_argument("--window", type=int, default=None, help="override the sliding-window crop (pixels)")
    parser.add_argument("--stride", type=int, default=None, help="override the sliding-window stride (pixels)")
    parser.add_argument("--max-images", type=int, default=None, help="evaluate the first N images of each benchmark")
    parser.add_argument("--name", default=None, help="row name (default: model, variant, options)")
    parser.add_argument("--out", default="openvocab-table", help="folder of the JSON and Markdown table")
    parser.add_argument("--cache-dir", default=None, help="text-embedding cache folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--progress", action="store_true")
    return parser


def load_segmenter(args: argparse.Namespace) -> Any:
    """The segmenter of the run: CLIP checkpoints through :mod:`siglip2_dense.openvocab.clip`, else SigLIP."""
    from siglip2_dense.openvocab.clip import is_clip_checkpoint
    from siglip2_dense.openvocab.pamr import PAMR_ITERATIONS

    common = dict(variant=args.variant, templates=args.templates, device=args.device, cache_dir=args.cache_dir,
                  inference=args.inference, pamr_iterations=PAMR_ITERATIONS if args.pamr else 0, proxy=args.proxy)
    if getattr(args, "head", None) is not None:
        from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

        if is_clip_checkpoint(args.model) or args.proxy is not None:
            raise RequestError("--head runs a trained head on a SigLIP / SigLIP2 checkpoint; leave out --proxy "
                               "and give a SigLIP checkpoint as --model")
        return OpenVocabSegmenter.from_pretrained(args.model, head=args.head, device=args.device,
                                                  cache_dir=args.cache_dir, inference=args.inference,
                                                  pamr_iterations=PAMR_ITERATIONS if args.pamr else 0)
    if is_clip_checkpoint(args.model):
        from siglip2_dense.openvocab.clip import clip_segmenter

        return clip_segmenter(args.model, **common)
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    return OpenVocabSegmenter.from_pretrained(args.model, map_mlp=args.map_mlp, **common)


def _threshold(text: str | None, name: str) -> float | None:
    if text is None:
        return get_benchmark(name).background_threshold
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise RequestError(f"--background-threshold {text!r}: expected a probability or 'none'") from None
    if not 0.0 <= value <= 1.0:
        raise RequestError(f"--background-threshold {value}: expected a probability in [0, 1]")
    return value if get_benchmark(name).background_threshold is not None else None


def run(args: argparse.Namespace) -> int:
    names = resolve_benchmarks(args.benchmarks)
    root = Path(args.data_root).expanduser()
    present = []
    for name in names:
        folder = root / DATA_FOLDERS[name]
        if folder.is_dir():
            present.append(name)
        else:
            print(f"{name}: skipped, no data at {folder} (put the {BENCHMARKS[name].dataset.__name__} "
                  f"folder there; see the README's data set list)")
    segmenter = load_segmenter(args)
    results = {}
    for name in present:
        results[name] = run_benchmark(
            segmenter, name, root / DATA_FOLDERS[name], benchmark_vocabulary(name, args.vocabulary),
            _threshold(args.background_threshold, name), inference=args.inference, max_images=args.max_images,
            progress=args.progress, short_side=args.short_side, window=args.window, stride=args.stride,
        )
        print(f"{name}: mIoU {results[name]['mIoU']} on {results[name]['num_images']} images")
    options = ([f"head {args.head}"] if getattr(args, "head", None) else [args.variant]) + (["pamr"] if args.pamr else []) + ([args.inference] if args.inference != "slide" else [])
    if args.map_mlp is not None:
        options.append("map-mlp" if args.map_mlp else "no-map-mlp")
    row = {"name": args.name or f"{args.model} {' '.join(options)}", "model": args.model, "variant": args.variant,
           "map_mlp": segmenter.head.map_mlp if hasattr(segmenter.head, "map_mlp") else None, "pamr": args.pamr,
           "inference": args.inference, "templates": args.templates, "vocabulary": args.vocabulary,
           "proxy": args.proxy, "overrides": {"short_side": args.short_side, "window": args.window,
                                               "stride": args.stride, "background_threshold": args.background_threshold},
           "average": row_average(results), "results": results}
    rows = write_table(Path(args.out), row)
    print(markdown_table(rows), end="")
    if any(name in results for name in TABLE3):
        print(table3_row(row["name"], results), end="")
    return 0


def table3_row(name: str, results: dict[str, Any]) -> str:
    """The run as a row of the SigLIP2 paper's Table 3 (:data:`TABLE3` columns, mIoU with 1 decimal)."""
    header = "| run | " + " | ".join(TABLE3.values()) + " |"
    cells = [_cell(results.get(benchmark, {}).get("mIoU")) for benchmark in TABLE3]
    return "\n".join([header, "|---" * (len(TABLE3) + 1) + "|", f"| {name} | " + " | ".join(cells) + " |"]) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    from siglip2_dense.cli import run_tool

    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
