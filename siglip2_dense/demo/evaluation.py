"""Known-answer measurements of a demo checkpoint through the toolkit's public open-vocabulary path.

- :func:`zero_shot_accuracy`: for each scene with at least one shape, the top-1 of the 16 shape
  prompts ("this is a photo of red circle", ...) scored by :meth:`OpenVocabSegmenter.classify`
  (the MAP-pooled image embedding) must be a class present in the scene's mask; percent of scenes.
- :func:`open_vocab_miou`: :class:`~siglip2_dense.openvocab.segmenter.OpenVocabSegmenter` with all 17 class
  names as labels ("background" is a label like the others, no threshold), label maps scored by
  :class:`~siglip2_dense.evaluation.SegmentationEvaluator` (mmseg's data-set-level mIoU, percent).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from siglip2_dense.data.synthetic import CLASS_NAMES, NUM_CLASSES, SyntheticScene, make_scene
from siglip2_dense.demo.data import held_out_scene_seed, training_scene_seed

SHAPE_CLASS_NAMES = CLASS_NAMES[1:]


def held_out_scenes(num: int, size: int = 128) -> list[SyntheticScene]:
    """Held-out scenes ``0..num-1`` (seeds never used for training) at ``size x size``."""
    return [make_scene(held_out_scene_seed(i), size, size) for i in range(num)]


def validation_scenes(seed: int, pool_size: int, num: int, size: int = 128) -> list[SyntheticScene]:
    """Scenes from a run's training seed range but past its pool (never trained on): for
    monitoring and calibration during development, so the held-out scenes stay untouched."""
    return [make_scene(training_scene_seed(seed, pool_size + i), size, size) for i in range(num)]


def zero_shot_accuracy(segmenter: Any, scenes: Sequence[SyntheticScene], batch_size: int = 64) -> float:
    """Percent of scenes (with a shape) whose top-1 shape prompt names a class present in the scene."""
    scored = [s for s in scenes if any(label > 0 for label in s.labels_present)]
    hits = 0
    for start in range(0, len(scored), batch_size):
        chunk = scored[start : start + batch_size]
        probabilities = segmenter.classify([s.image for s in chunk], list(SHAPE_CLASS_NAMES))
        best = probabilities.argmax(dim=1) + 1
        hits += sum(int(b) in s.labels_present for b, s in zip(best.tolist(), chunk))
    return 100.0 * hits / len(scored)


def open_vocab_miou(segmenter: Any, scenes: Sequence[SyntheticScene], batch_size: int = 32) -> dict[str, Any]:
    """``{"mIoU", "IoU"}`` (percent; per class as a list, NaN where a class never appears)."""
    from siglip2_dense.evaluation import SegmentationEvaluator

    evaluator = SegmentationEvaluator(num_classes=NUM_CLASSES, ignore_index=255)
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        results = segmenter.segment_batch([s.image for s in chunk], list(CLASS_NAMES))
        for scene, result in zip(chunk, results):
            evaluator.update(result.label_map, torch.from_numpy(scene.mask).long())
    metrics = evaluator.compute()
    return {"mIoU": float(metrics["mIoU"]), "IoU": [round(float(v), 2) for v in metrics["IoU"]]}


def evaluate_demo_checkpoint(
    path: str | Path, scenes: Sequence[SyntheticScene], variants: Sequence[str] = ("plain", "sclip", "naclip"),
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Zero-shot accuracy and every variant's open-vocabulary mIoU of the checkpoint at ``path``."""
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    figures: dict[str, Any] = {}
    for variant in variants:
        segmenter = OpenVocabSegmenter.from_pretrained(str(path), variant=variant, cache_dir=cache_dir)
        if "zero_shot_accuracy" not in figures:
            figures["zero_shot_accuracy"] = round(zero_shot_accuracy(segmenter, scenes), 2)
        figures[f"open_vocab_miou_{variant}"] = round(open_vocab_miou(segmenter, scenes)["mIoU"], 2)
    return figures
