"""Validation of every head of a :class:`~siglip2_dense.head_grid.HeadGrid` in one pass over the data.

Per image (batch of one, as mmsegmentation tests) the grid predicts under ``config.eval``'s protocol
(:func:`siglip2_dense.evaluation.protocols.predict_image`); each head's scores become a prediction at
the label's size and update that head's evaluator, through the one evaluation loop
(:func:`siglip2_dense.evaluation.loop.evaluate_images`) that ``tools/eval.py`` uses too. Each process
takes every ``world_size``-th image; the evaluators' sum states are reduced across processes by
torchmetrics in ``compute()``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from siglip2_dense.build import build_evaluator, ignore_index_of
from siglip2_dense.config import ExperimentConfig
from siglip2_dense.evaluation.loop import evaluate_images, scores_to_prediction
from siglip2_dense.evaluation.protocols import check_eval_config, predict_image
from siglip2_dense.head_grid import HeadGrid


def evaluate(
    grid: HeadGrid,
    dataset: Dataset,
    config: ExperimentConfig,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    autocast: Callable[[], AbstractContextManager] | None = None,
) -> list[dict[str, Any]]:
    """Every head's metrics over ``dataset`` (items with the eval transform applied), all processes together.

    Returns one ``evaluator.compute()`` dict per head (``mIoU``... or ``abs_rel``...).
    """
    check_eval_config(config, grid.backbone)
    evaluators = [build_evaluator(config, ignore_index_of(dataset)) for _ in range(grid.num_heads)]

    def predict(image: np.ndarray, size: tuple[int, int]) -> list[torch.Tensor]:
        outputs = predict_image(grid, image, config, device)
        return [scores_to_prediction(scores, size, config.task) for scores in outputs.chunk(grid.num_heads, dim=0)]

    was_training = grid.training
    grid.eval()
    try:
        return evaluate_images(predict, dataset, evaluators, config.task, device, rank, world_size, autocast=autocast)
    finally:
        grid.train(was_training)


def main_metric(task: str) -> tuple[str, bool]:
    """``(metric name, higher is better)`` that picks the best head and checkpoint."""
    if task == "normals":
        return ("rmse", False)  # Probe3D's / TIPS's angular RMSE in degrees
    return ("mIoU", True) if task == "segmentation" else ("abs_rel", False)
