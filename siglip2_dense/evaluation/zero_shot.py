"""Zero-shot (open-vocabulary) evaluation settings: an experiment whose head is ``openvocab``.

A zero-shot experiment is an ordinary :class:`~siglip2_dense.config.ExperimentConfig` whose
``model.backbone`` names a full SigLIP / SigLIP2 checkpoint (both towers) and whose head is::

    head:
      name: openvocab
      args:
        labels: class_names/sclip_voc21   # label file (one label per line, synonyms comma-separated)
                                          # or a packaged vocabulary; default: see zero_shot_labels
        templates: single                 # single | imagenet80
        variant: plain                    # plain | sclip | naclip | ...
        background_threshold: 0.1         # with-background benchmarks: below it a pixel is class 0;
                                          # default: the benchmark's registered threshold; null: none

Nothing is trained: :class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` scores every pixel
against every label, label ``k`` standing for class ``k`` of the ground truth. ``eval.mode``
``slide`` (``eval.crop_size`` / ``eval.stride``) or ``native`` (``model.max_num_patches``).

``data.dataset`` naming a benchmark of :data:`siglip2_dense.data.benchmarks.BENCHMARKS` (``voc21``,
``context59``, ...) runs it as ``eval-openvocab`` runs that benchmark
(:mod:`siglip2_dense.openvocab.benchmark_table`): the image resized to short side ``data.short_side``
with the long side at most 2048, probabilities upsampled (bilinear) to the ground truth, arg-max, and
pixels whose best probability is below the background threshold set to class 0. The registry
supplies the defaults (class-name file, threshold); ``configs/zeroshot/benchmarks/`` spells the whole
protocol out per benchmark.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from siglip2_dense.build import ItemTransform, build_eval_transform
from siglip2_dense.config import ExperimentConfig, HeadConfig
from siglip2_dense.data.benchmarks import BENCHMARKS, benchmark_resize, get_benchmark, is_benchmark
from siglip2_dense.errors import ConfigError
from siglip2_dense.evaluation.loop import PixelPredictor, check_output_channels
from siglip2_dense.heads import HEADS, OpenVocabHead, learns_from_labels

ZERO_SHOT_HEAD = next(name for name, head in HEADS.items() if head is OpenVocabHead)
ZERO_SHOT_ARGS = ("labels", "templates", "variant", "background_threshold")
ZERO_SHOT_MODES = ("slide", "native")
ADE20K_VOCABULARY = "ade20k_150_synonyms"


def is_zero_shot(config: ExperimentConfig) -> bool:
    """Whether ``config``'s head is one that learns nothing from labels (open-vocabulary segmentation)."""
    return config.head.name in HEADS and not learns_from_labels(config.head.name)


def with_open_vocab_model(config: ExperimentConfig, name_or_path: str) -> ExperimentConfig:
    """``config`` made zero-shot on checkpoint ``name_or_path`` (its head's args kept when already zero-shot)."""
    head = config.head if is_zero_shot(config) else HeadConfig(name=ZERO_SHOT_HEAD, args={})
    model = dataclasses.replace(config.model, backbone=name_or_path)
    return dataclasses.replace(config, model=model, head=head)


def check_zero_shot_config(config: ExperimentConfig) -> None:
    """Reject settings zero-shot evaluation cannot honour, naming the keys and valid values."""
    unknown = sorted(set(config.head.args) - set(ZERO_SHOT_ARGS))
    if unknown:
        raise ConfigError(f"head.args {unknown} mean nothing to head.name=openvocab; valid keys: "
                          f"{', '.join(ZERO_SHOT_ARGS)}")
    if config.task != "segmentation":
        raise ConfigError(f"head.name=openvocab segments; task={config.task!r} must be 'segmentation'")
    if config.eval.mode not in ZERO_SHOT_MODES:
        raise ConfigError(f"eval.mode={config.eval.mode!r}: zero-shot evaluation takes {' or '.join(ZERO_SHOT_MODES)}")
    if config.eval.flip or list(config.eval.scales) != [1.0]:
        raise ConfigError("eval.flip / eval.scales: zero-shot evaluation has no test-time augmentation; "
                          "set eval.flip=false eval.scales=[1.0]")
    check_background_threshold(config)


def with_background(name: str) -> bool:
    """Whether data set ``name`` is a registered benchmark whose class 0 is background."""
    return is_benchmark(name) and get_benchmark(name).background_threshold is not None


def check_background_threshold(config: ExperimentConfig) -> None:
    """``head.args.background_threshold``: null, or a probability on a with-background benchmark."""
    value = config.head.args.get("background_threshold")
    if value is None:
        return
    key = f"head.args.background_threshold={value!r}"
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{key}: expected a probability in [0, 1] or null (no background assignment)")
    if not with_background(config.data.dataset):
        choices = ", ".join(n for n in BENCHMARKS if with_background(n))
        raise ConfigError(f"{key}: data.dataset={config.data.dataset!r} has no background class 0 to assign; "
                          f"a threshold applies to the with-background benchmarks ({choices}); remove it or set null")


def zero_shot_background_threshold(config: ExperimentConfig) -> float | None:
    """``head.args.background_threshold`` when given (null: none), else the benchmark's registered one
    (:data:`~siglip2_dense.data.benchmarks.BENCHMARKS`; None for other data sets)."""
    check_background_threshold(config)
    if "background_threshold" in config.head.args:
        value = config.head.args["background_threshold"]
        return None if value is None else float(value)
    return get_benchmark(config.data.dataset).background_threshold if is_benchmark(config.data.dataset) else None


def zero_shot_eval_transform(config: ExperimentConfig) -> ItemTransform:
    """A benchmark's test-time resize (short side ``data.short_side``, long side <= 2048, as ``eval-openvocab``);
    other data sets: :func:`~siglip2_dense.build.build_eval_transform`."""
    if is_benchmark(config.data.dataset):
        return benchmark_resize(config.data.short_side)
    return build_eval_transform(config)


def zero_shot_labels(config: ExperimentConfig, class_names: Sequence[str] | None) -> list[str]:
    """The label list, label ``k`` naming class ``k``. In order of preference:

    ``head.args.labels`` (a file or a packaged vocabulary); the classes the data root's
    ``class_names.txt`` names (a data set of its own in a benchmark's layout, as the synthetic world);
    for ADE20K the packaged ``ade20k_150_synonyms``; for another benchmark its registered class-name file
    with synonyms; else the data set's class names.

    Raises:
        ConfigError: no labels can be found, or their number differs from the data set's classes.
    """
    from siglip2_dense.data.labels import read_root_class_names
    from siglip2_dense.text.prompts import read_label_file

    source = config.head.args.get("labels")
    dataset = config.data.dataset
    own_names = read_root_class_names(config.data.root) is not None
    if source:
        labels = read_label_file(str(source))
    elif dataset == "ade20k" and not own_names:
        labels = read_label_file(ADE20K_VOCABULARY)
    elif is_benchmark(dataset) and not own_names:
        labels = read_label_file(f"class_names/{get_benchmark(dataset).class_names}")
    elif class_names:
        labels = list(class_names)
    else:
        raise ConfigError("head.args.labels: the data set names no classes; give a label file (one label per line)")
    if class_names is not None and len(labels) != len(class_names):
        raise ConfigError(
            f"head.args.labels gives {len(labels)} labels but the data set has {len(class_names)} classes; "
            "label k must name class k"
        )
    return labels


def build_zero_shot_predictor(
    config: ExperimentConfig,
    labels: Sequence[str],
    device: torch.device,
    cache_dir: str | None = None,
) -> PixelPredictor:
    """``(image [h, w, 3] uint8, ground-truth size (H, W)) -> [H, W]`` long labels; the labels' text embedded once.

    Per image: label probabilities at the image's size, upsampled (bilinear, ``align_corners=False``) to the
    ground truth, arg-max; with a background threshold (:func:`zero_shot_background_threshold`) pixels whose
    best probability is below it become class 0, as ``eval-openvocab`` labels them.

    Args:
        cache_dir: the text-embedding cache (default ``~/.cache/siglip2_dense/text``).
    """
    from siglip2_dense.openvocab.benchmark_table import labels_from_probabilities
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    check_zero_shot_config(config)
    args = config.head.args
    threshold = zero_shot_background_threshold(config)
    segmenter = OpenVocabSegmenter.from_pretrained(
        config.model.backbone,
        variant=str(args.get("variant", "plain")),
        templates=args.get("templates", "single"),
        max_num_patches=config.model.max_num_patches,
        device=device,
        cache_dir=cache_dir,
        inference=config.eval.mode,
        crop=tuple(config.eval.crop_size),
        stride=tuple(config.eval.stride),
    )
    embedded = segmenter.encode_labels(list(labels))

    def predict(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        probabilities = segmenter.image_probabilities(image, embedded)  # [K, h, w]
        check_output_channels(probabilities, "segmentation", len(labels))
        probabilities = F.interpolate(probabilities[None].float(), size=tuple(size), mode="bilinear",
                                      align_corners=False)[0]
        probabilities = segmenter.head.probabilities(probabilities, embedded.label_index)
        return labels_from_probabilities(probabilities, threshold)

    return predict
