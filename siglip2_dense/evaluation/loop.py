"""The one per-image evaluation loop: training's validation, ``tools/eval.py`` and zero-shot segmentation.

Per image (a batch of one, as mmsegmentation tests): ``predict(image, size)`` gives the prediction
at the ground truth's size -- for a scores function (``image -> [K, h, w]`` at the image's size,
after the eval transform) :func:`from_scores` resizes the scores bilinearly (``align_corners=False``)
to the ground truth and takes the argmax (segmentation), channel 0 (depth) or the first three channels,
L2-normalised per pixel (normals) -- then
``evaluator.update`` and an optional per-image callback (pictures). Process ``r`` of ``N`` takes
images ``r, r + N, ...``; the evaluators' sum states are reduced across processes by torchmetrics
in ``compute()``, so N processes give the numbers of one.

As detectron2's ``inference_on_dataset``: a predictor, a data set and evaluators. Training's validation
passes one evaluator per head of a ``HeadGrid`` and a predictor that returns one prediction per head.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from siglip2_dense.errors import ConfigError

ScoresFunction = Callable[[np.ndarray], torch.Tensor]
"""``[h, w, 3]`` uint8 image -> ``[K, h, w]`` scores at its size (logits or probabilities; depth: K = 1)."""

PixelPredictor = Callable[[np.ndarray, tuple[int, int]], Any]
"""``([h, w, 3]`` uint8 image, ground-truth size ``(H, W))`` -> ``[H, W]``: long labels or float32 metres, or
``[H, W, 3]`` unit normals (a list of them, one per evaluator, when the loop is given a list of evaluators)."""

ImageCallback = Callable[[int, dict[str, Any], torch.Tensor], Any]
"""``(data-set index, item, prediction [H, W] at the target's size: long labels or float metres)``."""

TARGET_KEYS = {"segmentation": "mask", "depth": "depth", "normals": "normals"}


def shard(length: int, rank: int, world_size: int) -> range:
    """The data-set indices process ``rank`` of ``world_size`` evaluates: ``rank, rank + world_size, ...``."""
    return range(rank, length, world_size)


def scores_to_prediction(scores: torch.Tensor, size: tuple[int, int], task: str) -> torch.Tensor:
    """``[K, h, w]`` scores -> the prediction at ``size``: argmax labels ``[H, W]`` (long), depth ``[H, W]``
    (float32) or normals ``[H, W, 3]`` (channels 0-2, unit length per pixel; a 4th, the concentration, dropped).

    The scores are resized bilinearly first (mmsegmentation resizes logits, then takes the argmax; Probe3D
    resizes its normal outputs, then compares directions).
    """
    if tuple(scores.shape[-2:]) != tuple(size):
        scores = F.interpolate(scores[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
    if task == "segmentation":
        return scores.argmax(dim=0)
    if task == "normals":
        return F.normalize(scores[:3].float(), dim=0, eps=1e-12).permute(1, 2, 0)
    return scores[0].float()


def check_output_channels(scores: torch.Tensor, task: str, num_classes: int | None) -> None:
    """Fail with the numbers when the model's output does not fit the evaluation."""
    channels = int(scores.shape[0])
    if task == "depth" and channels != 1:
        raise ConfigError(f"task=depth needs a one-channel depth output; the model gives {channels} channels")
    if task == "normals" and channels not in (3, 4):
        raise ConfigError(f"task=normals needs 3 normal channels (+ 1 concentration); the model gives {channels} "
                          "channels: use a normals head (linear_normals, dpt_normals)")
    if task == "segmentation" and num_classes is not None and channels != num_classes:
        raise ConfigError(
            f"the model predicts {channels} classes but the evaluation counts {num_classes} "
            "(head.args.num_classes / the label list); they must be equal"
        )


def update_evaluator(evaluator: Any, prediction: torch.Tensor, target: torch.Tensor, task: str) -> None:
    """Add one image: ``prediction [H, W]`` (labels or metres) or ``[H, W, 3]`` (normals) against the target."""
    if task == "segmentation":
        evaluator.update(prediction[None], target[None].long())
    else:
        evaluator.update(prediction[None], target[None].float())


def from_scores(scores: ScoresFunction, task: str, num_classes: int | None = None) -> PixelPredictor:
    """A :data:`PixelPredictor` from a scores function: resize to the ground truth, then argmax / channel 0.

    Args:
        num_classes: segmentation: the classes the evaluation counts (checked against the scores).
    """

    def predict(image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        image_scores = scores(image)
        check_output_channels(image_scores, task, num_classes)
        return scores_to_prediction(image_scores, size, task)

    return predict


def evaluate_images(
    predict: PixelPredictor,
    dataset: Dataset,
    evaluator: Any,
    task: str,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    on_image: ImageCallback | None = None,
    autocast: Callable[[], AbstractContextManager] | None = None,
    progress: bool = False,
    description: str = "eval",
) -> Any:
    """Evaluate ``predict`` on this process's share of ``dataset``; return ``evaluator.compute()`` (all processes).

    Args:
        predict: see :data:`PixelPredictor` (:func:`from_scores` makes one from a scores function).
        dataset: items ``{"image", "mask" | "depth" | "normals", "path"}`` with the eval transform applied.
        evaluator: a ``SegmentationEvaluator`` / ``DepthEvaluator`` (reset here, moved to ``device``),
            or a list of them (``predict`` then returns one prediction per evaluator, and so does
            this function: a list of ``compute()`` dicts).
        task: ``segmentation``, ``depth`` or ``normals``.
        on_image: called after each image's update, see :data:`ImageCallback` (the first prediction).
        autocast: a context factory around ``predict`` (bf16 on GPUs); None: none.
        progress: show a tqdm bar (this process's images).
    """
    if task not in TARGET_KEYS:
        raise ConfigError(f"task={task!r}: expected one of {', '.join(TARGET_KEYS)}")
    target_key = TARGET_KEYS[task]
    several = isinstance(evaluator, (list, tuple))
    evaluators = [e.to(device) for e in (evaluator if several else [evaluator])]
    for each in evaluators:
        each.reset()
    indices = shard(len(dataset), rank, world_size)
    with torch.inference_mode():
        for index in tqdm(indices, desc=description, disable=not progress, dynamic_ncols=True):
            item = dataset[index]
            target = torch.as_tensor(np.asarray(item[target_key])).to(device)
            with autocast() if autocast is not None else nullcontext():
                predicted = predict(item["image"], tuple(target.shape[:2]))
            predictions = [p.to(device) for p in (predicted if several else [predicted])]
            for each, prediction in zip(evaluators, predictions, strict=True):
                update_evaluator(each, prediction, target, task)
            if on_image is not None:
                on_image(index, item, predictions[0])
    results = [each.compute() for each in evaluators]
    return results if several else results[0]
