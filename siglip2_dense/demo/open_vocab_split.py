"""The known answer for a trained open-vocabulary head: train on some classes, score classes never trained on.

The demo world's 16 colour-shape classes are split (:data:`UNSEEN_CLASSES`): one held-out combination per
colour and per shape (a Latin square), so every colour word and every shape word is still seen, three
times, in the 12 seen combinations; only the pairings are new. :func:`write_seen_world` writes training
and validation scenes in the ``folder`` layout with the seen vocabulary only (background + 12 classes;
pixels of an unseen class are unlabelled, 255). :func:`held_out_scenes` are the demo model's held-out
scenes (never trained on, by the demo checkpoint or the head) that show an unseen class.
:func:`split_scores` segments them into all 17 classes and reports seen- and unseen-class mIoU.

``tests/openvocab/test_cost_aggregation_generalises.py`` (slow) trains ``cost_aggregation`` through
:func:`siglip2_dense.training.engine.train` with ``configs/synthetic_cost_aggregation_seen.yaml`` and
compares it with every training-free variant on these scenes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from siglip2_dense.data.image_io import write_png, write_rgb
from siglip2_dense.data.synthetic import CLASS_NAMES, SyntheticScene, make_scene
from siglip2_dense.demo.data import held_out_scene_seed
from siglip2_dense.evaluation.segmentation import SegmentationEvaluator
from siglip2_dense.files import write_bytes_atomic

UNSEEN_CLASSES = ("red star", "green triangle", "blue square", "yellow circle")
SEEN_CLASSES = tuple(name for name in CLASS_NAMES if name not in UNSEEN_CLASSES)  # background first
SPLIT_SCENE_TAG = 20_261_130  # training / validation scenes: (tag, split, index), apart from the demo's seeds
UNLABELLED = 255


def seen_mask(mask: np.ndarray) -> np.ndarray:
    """A 17-class mask -> the seen vocabulary's indices (``SEEN_CLASSES``), unseen classes 255."""
    lookup = np.full(256, UNLABELLED, dtype=np.uint8)
    for index, name in enumerate(CLASS_NAMES):
        if name in SEEN_CLASSES:
            lookup[index] = SEEN_CLASSES.index(name)
    return lookup[mask]


def write_seen_world(root: str | os.PathLike, num_train: int, num_val: int, size: int = 128) -> Path:
    """Write ``root/class_names.txt`` (the seen classes) and ``root/{training,validation}/{images,masks}``
    (``data.dataset: folder``); return ``root``."""
    root = Path(root)
    for split, count, split_tag in (("training", num_train, 0), ("validation", num_val, 1)):
        for index in range(count):
            scene = make_scene((SPLIT_SCENE_TAG, split_tag, index), size, size)
            write_rgb(root / split / "images" / f"{index:05d}.png", scene.image)
            write_png(root / split / "masks" / f"{index:05d}.png", seen_mask(scene.mask))
    write_bytes_atomic(root / "class_names.txt", ("\n".join(SEEN_CLASSES) + "\n").encode())
    return root


def held_out_scenes(count: int, size: int = 128, min_pixels: int = 16) -> list[SyntheticScene]:
    """The first ``count`` held-out demo scenes (:func:`~siglip2_dense.demo.data.held_out_scene_seed`) that
    show an unseen class on at least ``min_pixels`` pixels."""
    unseen = np.array([CLASS_NAMES.index(name) for name in UNSEEN_CLASSES])
    scenes, index = [], 0
    while len(scenes) < count:
        scene = make_scene(held_out_scene_seed(index), size, size)
        if int(np.isin(scene.mask, unseen).sum()) >= min_pixels:
            scenes.append(scene)
        index += 1
    return scenes


def split_scores(segment: Callable[[list[np.ndarray]], Sequence[torch.Tensor]], scenes: Sequence[SyntheticScene],
                 batch: int = 16) -> dict[str, float | list[float]]:
    """Score ``segment`` (images -> ``[H, W]`` label maps over the 17 :data:`CLASS_NAMES`) on ``scenes``.

    Returns:
        ``{"seen_miou", "unseen_miou", "miou"}`` in percent (the mean IoU of the classes present in the
        ground truth or the predictions), and ``"iou"``: the 17 per-class IoUs (NaN where a class appears in
        neither).
    """
    evaluator = SegmentationEvaluator(num_classes=len(CLASS_NAMES))
    for start in range(0, len(scenes), batch):
        part = scenes[start : start + batch]
        for scene, label_map in zip(part, segment([s.image for s in part])):
            evaluator.update(label_map.long()[None], torch.from_numpy(scene.mask.astype(np.int64))[None])
    iou = [float(v) for v in evaluator.compute()["IoU"]]
    seen = [iou[CLASS_NAMES.index(n)] for n in SEEN_CLASSES]
    unseen = [iou[CLASS_NAMES.index(n)] for n in UNSEEN_CLASSES]
    return {"seen_miou": float(np.nanmean(seen)), "unseen_miou": float(np.nanmean(unseen)),
            "miou": float(np.nanmean(iou)), "iou": iou}


TRAINING_FREE_VARIANTS = ("plain", "sclip", "naclip", "clearclip", "value")  # proxyclip needs a second backbone


def segmenter_scores(segmenter: Any, scenes: Sequence[SyntheticScene]) -> dict[str, float | list[float]]:
    """:func:`split_scores` of an :class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` asked for
    the 17 :data:`CLASS_NAMES` (every pixel gets one: no background threshold)."""
    labels = list(CLASS_NAMES)
    return split_scores(lambda images: [r.label_map for r in segmenter.segment_batch(images, labels)], scenes)


def training_free_scores(checkpoint: str, scenes: Sequence[SyntheticScene], cache_dir: str | None = None,
                         variants: Sequence[str] = TRAINING_FREE_VARIANTS) -> dict[str, dict[str, Any]]:
    """Every training-free variant of ``checkpoint`` (native inference, the single template) on ``scenes``."""
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    return {variant: segmenter_scores(OpenVocabSegmenter.from_pretrained(checkpoint, variant=variant,
                                                                         cache_dir=cache_dir), scenes)
            for variant in variants}


def trained_head_scores(checkpoint: str, head: str | os.PathLike, scenes: Sequence[SyntheticScene],
                        cache_dir: str | None = None) -> dict[str, Any]:
    """The trained head saved in ``head`` on ``checkpoint``'s towers (native inference) on ``scenes``."""
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    return segmenter_scores(OpenVocabSegmenter.from_pretrained(checkpoint, head=head, cache_dir=cache_dir), scenes)
