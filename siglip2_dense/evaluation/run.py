"""One evaluation run: an experiment config + a trained model (or zero-shot) -> metrics files and pictures.

What ``tools/eval.py`` does, callable in-process::

    config = load_eval_config("configs/ade20k_linear_siglip2-b16-naflex.yaml", ["data.root=/data/ade"],
                              checkpoint="runs/ade20k_linear_siglip2-b16-naflex/best")
    result = run_evaluation(config, checkpoint="runs/.../best", show_dir="pictures")
    print(result.table)

The validation split of ``config.data`` goes through the config's eval transform and
``config.eval`` protocol (whole / slide / native, TTA) as training's validation
(:func:`siglip2_dense.evaluation.protocols.predict_image`; sliding-window segmentation streams the classes
through :mod:`siglip2_dense.evaluation.slide_labels`, the same scores as matrix products), or through
:class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` when the head is ``openvocab``
(:mod:`siglip2_dense.evaluation.zero_shot`: a registered benchmark's resize, labels and background
threshold); :func:`siglip2_dense.evaluation.loop.evaluate_images` does the
per-image loop. Under ``torchrun`` every process evaluates its share of the images and draws their
pictures; the metrics are reduced over all processes and rank 0 writes ``metrics.json`` and
``metrics.txt`` (:mod:`siglip2_dense.evaluation.report`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siglip2_dense.build import (
    backbone_dtype,
    build_dataset,
    build_eval_transform,
    build_evaluator,
    ignore_index_of,
    resolve_training_device,
)
from siglip2_dense.config import ExperimentConfig, load_config, output_dir
from siglip2_dense.data.labels import dataset_class_names, dataset_palette, names_for_table
from siglip2_dense.devices import autocast_factory
from siglip2_dense.distributed import ProcessContext, close_processes, init_processes, raise_if_lost_process
from siglip2_dense.errors import RequestError
from siglip2_dense.evaluation.checkpoint import checkpoint_backbone, load_model_for_evaluation
from siglip2_dense.evaluation.loop import PixelPredictor, evaluate_images, from_scores
from siglip2_dense.evaluation.pictures import EvaluationPictures
from siglip2_dense.evaluation.protocols import eval_patch_budget
from siglip2_dense.evaluation.report import format_table, metrics_record, write_metrics_files
from siglip2_dense.evaluation.zero_shot import (
    build_zero_shot_predictor,
    check_zero_shot_config,
    is_zero_shot,
    with_open_vocab_model,
    zero_shot_background_threshold,
    zero_shot_eval_transform,
    zero_shot_labels,
)


@dataclass
class EvaluationResult:
    """What a run produced: the ``metrics.json`` record, its table, where they went, and whether this process wrote them."""

    record: dict[str, Any]
    table: str
    out_dir: Path
    is_main: bool


def load_eval_config(
    path: str | Path,
    overrides: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    open_vocab: str | None = None,
) -> ExperimentConfig:
    """The experiment config for evaluation.

    ``model.backbone`` comes from the model evaluated: the checkpoint's own backbone (so a training
    config whose backbone is left for the command line needs none), or the ``open_vocab``
    checkpoint, which also makes the experiment zero-shot (:func:`~siglip2_dense.evaluation.zero_shot.with_open_vocab_model`).
    ``overrides`` are dotted ``key=value`` pairs as for training.
    """
    if checkpoint is not None and open_vocab is not None:
        raise RequestError("give either a trained checkpoint or an open-vocabulary model, not both")
    backbone = open_vocab if open_vocab is not None else (checkpoint_backbone(checkpoint) if checkpoint else None)
    prefix = [f"model.backbone={backbone}"] if backbone is not None else []
    config = load_config(path, prefix + list(overrides))
    if open_vocab is not None:
        return with_open_vocab_model(config, open_vocab)
    if backbone is not None:
        return dataclasses.replace(config, model=dataclasses.replace(config.model, backbone=backbone))
    return config


def default_out_dir(config: ExperimentConfig, checkpoint: str | Path | None) -> Path:
    """``<checkpoint>/eval_<split>`` for a trained model, ``<run folder>/eval_<split>`` for zero-shot."""
    folder = Path(checkpoint) if checkpoint is not None else output_dir(config)
    return folder / f"eval_{config.data.val_split}"


def uses_tta(config: ExperimentConfig) -> bool:
    """Whether ``config.eval`` asks for flip or multi-scale test-time augmentation."""
    return bool(config.eval.flip) or list(config.eval.scales) != [1.0]


def dense_model_predictor(
    model: torch.nn.Module, config: ExperimentConfig, device: torch.device, num_classes: int | None = None
) -> PixelPredictor:
    """``(image, size) -> prediction at size`` for a trained model under ``config.eval``'s protocol.

    Segmentation by sliding window without TTA streams the classes
    (:func:`~siglip2_dense.evaluation.slide_labels.slide_window_labels`, the same scores composed into matrix
    products, a fraction of the time); everything else is training's validation path
    (:func:`~siglip2_dense.evaluation.protocols.predict_image` on the model as a one-head grid) + :func:`from_scores`.
    """
    from siglip2_dense.evaluation.protocols import check_eval_config, predict_image
    from siglip2_dense.evaluation.slide_labels import slide_window_labels
    from siglip2_dense.head_grid import HeadGrid

    check_eval_config(config, model.backbone)
    if config.task == "segmentation" and config.eval.mode == "slide" and not uses_tta(config):
        def predict_labels(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
            return slide_window_labels(model, image, size, config.eval.crop_size, config.eval.stride,
                                       eval_patch_budget(config), num_classes=num_classes)

        return predict_labels
    grid = HeadGrid(model.backbone, [model.head], [list(range(len(model.backbone.layers)))]).eval()

    def scores(image: np.ndarray) -> torch.Tensor:
        return predict_image(grid, image, config, device)

    return from_scores(scores, config.task, num_classes)


def data_set_vocabulary(config: ExperimentConfig, class_names: Sequence[str] | None) -> list[str]:
    """The labels a trained open-vocabulary head is evaluated with: the data set's own vocabulary, as
    zero-shot evaluation finds it (the benchmark's class-name file with synonyms, the root's
    ``class_names.txt``, or the data set's names), never the head's training labels."""
    args = {key: value for key, value in config.head.args.items() if key != "labels"}
    return zero_shot_labels(dataclasses.replace(config, head=dataclasses.replace(config.head, args=args)), class_names)


def parameter_dtype(module: torch.nn.Module) -> str:
    """The dtype of ``module``'s first floating-point parameter, as ``"float32"`` / ``"bfloat16"``."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return str(parameter.dtype).removeprefix("torch.")
    return "none"


def eval_section(config: ExperimentConfig) -> dict[str, Any]:
    """The protocol, for ``metrics.json``."""
    section = {"mode": config.eval.mode, "crop_size": list(config.eval.crop_size), "stride": list(config.eval.stride),
               "flip": config.eval.flip, "scales": list(config.eval.scales),
               "max_num_patches": eval_patch_budget(config)}
    if config.task == "depth":
        section["depth_crop"] = config.eval.depth_crop
    return section


def run_evaluation(
    config: ExperimentConfig,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    show_dir: str | Path | None = None,
    head: int | None = None,
    text_cache_dir: str | None = None,
    colour_map: str = "viridis",
    progress: bool = True,
) -> EvaluationResult:
    """Evaluate on ``config.data.val_split``; rank 0 writes ``metrics.json`` / ``metrics.txt`` into ``out``.

    Args:
        config: from :func:`load_eval_config`; zero-shot when its head is ``openvocab``.
        checkpoint: a DenseModel directory or a training step checkpoint (None for zero-shot).
        out: the metrics folder (default :func:`default_out_dir`).
        show_dir: write one picture per image here (image | prediction | ground truth).
        head: which head of a step checkpoint's grid (default: the run's best).
        text_cache_dir: zero-shot: the text-embedding cache (default ``~/.cache/siglip2_dense/text``).
        colour_map: depth pictures: ``viridis`` or ``turbo``.
        progress: show a progress bar (rank 0).
    """
    context = init_processes(resolve_training_device(config.train.device))
    try:
        return _run(config, context, checkpoint, out, show_dir, head, text_cache_dir, colour_map, progress)
    except Exception as error:
        raise_if_lost_process(error, context)
        raise
    finally:
        close_processes(context)


def _run(
    config: ExperimentConfig,
    context: ProcessContext,
    checkpoint: str | Path | None,
    out: str | Path | None,
    show_dir: str | Path | None,
    head: int | None,
    text_cache_dir: str | None,
    colour_map: str,
    progress: bool,
) -> EvaluationResult:
    from siglip2_dense.evaluation import SegmentationEvaluator
    from siglip2_dense.heads import head_name

    zero_shot = is_zero_shot(config)
    if zero_shot and checkpoint is not None:
        raise RequestError("head.name=openvocab evaluates a SigLIP checkpoint zero-shot; leave the checkpoint out")
    if not zero_shot and checkpoint is None:
        raise RequestError(f"head.name={config.head.name!r} needs a trained checkpoint to evaluate")
    if zero_shot:
        check_zero_shot_config(config)
    device = context.device
    transform = zero_shot_eval_transform(config) if zero_shot else build_eval_transform(config)
    dataset = build_dataset(config, config.data.val_split, transform)
    segmentation = config.task == "segmentation"
    ignore_index = ignore_index_of(dataset)
    class_names = dataset_class_names(dataset, config.data.root) if segmentation else None
    sections: dict[str, Any] = {}
    if zero_shot:
        labels = zero_shot_labels(config, class_names)
        evaluator = SegmentationEvaluator(num_classes=len(labels), ignore_index=ignore_index)
        predict = build_zero_shot_predictor(config, labels, device, text_cache_dir)
        model_section = {"kind": "open_vocab", "checkpoint": config.model.backbone,
                         "templates": config.head.args.get("templates", "single"),
                         "variant": config.head.args.get("variant", "plain"),
                         "background_threshold": zero_shot_background_threshold(config)}
        sections["labels"] = labels
    else:
        model = load_model_for_evaluation(checkpoint, device, head, dtype=backbone_dtype(config, device))
        if hasattr(model.head, "set_vocabulary"):  # a trained open-vocabulary head: the data set's own classes
            from siglip2_dense.text.template_embeddings import checkpoint_template_embeddings

            labels = data_set_vocabulary(config, class_names)
            model.head.set_vocabulary(checkpoint_template_embeddings(config.model.backbone, labels,
                                                                     model.head.templates, device, text_cache_dir))
            sections["labels"] = labels
            config = dataclasses.replace(config, head=dataclasses.replace(config.head, args={
                **config.head.args, "num_classes": len(labels)}))
        evaluator = build_evaluator(config, ignore_index)
        predict = dense_model_predictor(model, config, device, getattr(evaluator, "num_classes", None))
        model_section = {"kind": "dense", "checkpoint": str(checkpoint), "backbone": model.backbone.name_or_path,
                         "head": head_name(model.head), "dtype": parameter_dtype(model.backbone),
                         "precision": config.train.precision}
    if segmentation:
        sections["class_names"] = names_for_table(class_names, evaluator.num_classes)
    pictures = None
    if show_dir is not None and config.task == "normals":
        raise RequestError("--show-dir draws segmentation and depth pictures; normals have none yet: leave it out")
    if show_dir is not None:
        palette = dataset_palette(dataset, config.data.root, evaluator.num_classes) if segmentation else None
        pictures = EvaluationPictures(show_dir, config.task, palette, ignore_index, config.data.min_depth,
                                      config.data.max_depth, colour_map, sections.get("class_names"))
    metrics = evaluate_images(
        predict, dataset, evaluator, config.task, device, context.rank, context.world_size, on_image=pictures,
        autocast=autocast_factory(config.train.precision, device), progress=progress and context.is_main,
        description=f"eval {config.name}",
    )
    record = metrics_record(
        name=config.name, task=config.task, model=model_section,
        data={"dataset": config.data.dataset, "root": str(config.data.root), "split": config.data.val_split,
              "num_images": len(dataset)},
        eval=eval_section(config), metrics=metrics, **sections,
    )
    out_dir = Path(out) if out is not None else default_out_dir(config, checkpoint)
    if context.is_main:
        write_metrics_files(out_dir, record)
    return EvaluationResult(record=record, table=format_table(record), out_dir=out_dir, is_main=context.is_main)
