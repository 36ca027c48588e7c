"""Zero-shot (open-vocabulary) evaluation settings: an experiment whose head is ``openvocab``.

A zero-shot experiment is an ordinary :class:`~siglip2_dense.config.ExperimentConfig` whose
``model.backbone`` names a full SigLIP / SigLIP2 checkpoint (both towers) and whose head is::

    head:
      name: openvocab
      args:
        labels: ade20k_150_synonyms    # label file (one label per line, synonyms comma-separated)
                                       # or a packaged vocabulary; default: ADE20K's 150 with
                                       # synonyms for ADE20K, else the data set's class names
        templates: single              # single | imagenet80
        variant: plain                 # plain | sclip | naclip

Nothing is trained: :class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` scores every pixel
against every label, label ``k`` standing for class ``k`` of the ground truth. ``eval.mode``
``slide`` (``eval.crop_size`` / ``eval.stride``) or ``native`` (``model.max_num_patches``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from siglip2_dense.config import ExperimentConfig, HeadConfig
from siglip2_dense.errors import ConfigError
from siglip2_dense.evaluation.loop import ScoresFunction
from siglip2_dense.heads import HEADS, OpenVocabHead, learns_from_labels

ZERO_SHOT_HEAD = next(name for name, head in HEADS.items() if head is OpenVocabHead)
ZERO_SHOT_ARGS = ("labels", "templates", "variant")
ZERO_SHOT_MODES = ("slide", "native")
ADE20K_VOCABULARY = "ade20k_150_synonyms"
ADE20K_CLASS_COUNT = 150


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


def zero_shot_labels(config: ExperimentConfig, class_names: Sequence[str] | None) -> list[str]:
    """The label list: ``head.args.labels`` (file or packaged name), else the default of the module docstring.

    Raises:
        ConfigError: no labels can be found, or their number differs from the data set's classes.
    """
    from siglip2_dense.text.prompts import read_label_file

    source = config.head.args.get("labels")
    if source:
        labels = read_label_file(str(source))
    elif config.data.dataset == "ade20k" and class_names is not None and len(class_names) == ADE20K_CLASS_COUNT:
        labels = read_label_file(ADE20K_VOCABULARY)
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
) -> ScoresFunction:
    """``image [H, W, 3] -> [K, H, W]`` label probabilities, the labels' text embedded once, here.

    Args:
        cache_dir: the text-embedding cache (default ``~/.cache/siglip2_dense/text``).
    """
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    check_zero_shot_config(config)
    args = config.head.args
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

    def predict(image):  # [H, W, 3] uint8 -> [K, H, W]
        return segmenter.image_probabilities(image, embedded)

    return predict
