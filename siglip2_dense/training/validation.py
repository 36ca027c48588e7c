"""Validation of every head of a :class:`~siglip2_dense.head_grid.HeadGrid` in one pass over the data.

Per image (batch of one, as mmsegmentation tests): predict with ``eval.mode`` -- ``whole`` (one
forward), ``slide`` (mmseg's sliding window) or ``native`` (NaFlex at the image's aspect ratio) --
optionally averaged over flips and scales (segmentation: mean of per-head softmax, as mmseg's
``SegTTAModel``); resize the prediction bilinearly to the label's size; then argmax (segmentation)
and update the head's evaluator. Each process takes every ``world_size``-th image; the evaluators'
sum states are reduced across processes by torchmetrics in ``compute()``.
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
from siglip2_dense.errors import ConfigError
from siglip2_dense.evaluation.grid_to_pixels import outputs_to_pixels, tensor_to_images
from siglip2_dense.evaluation.loop import TARGET_KEYS, scores_to_prediction, shard, update_evaluator
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.inference import predict_native, predict_tta, predict_whole, slide_window

PredictFn = Callable[[torch.Tensor], torch.Tensor]


def check_eval_config(config: ExperimentConfig, backbone: torch.nn.Module) -> None:
    """Reject eval settings the backbone cannot honour, naming the keys."""
    uses_tta = config.eval.flip or list(config.eval.scales) != [1.0]
    if config.eval.mode == "native" and not backbone.is_naflex:
        raise ConfigError("eval.mode='native' needs a NaFlex backbone; use 'whole' or 'slide' for FixRes / timm")
    if config.eval.mode == "native" and uses_tta:
        raise ConfigError("eval.flip / eval.scales (test-time augmentation) need eval.mode 'whole' or 'slide'")


def window_predictor(grid: HeadGrid, max_num_patches: int | None) -> PredictFn:
    """``[B, 3, h, w]`` image (0..255) -> every head's outputs at its pixels ``[B, G*K, h, w]``."""
    backbone = grid.backbone
    kwargs = {"max_num_patches": max_num_patches} if backbone.is_naflex else {}

    def predict(image: torch.Tensor) -> torch.Tensor:
        inputs = backbone.preprocess(tensor_to_images(image), **kwargs)
        outputs = grid(**inputs)
        return outputs_to_pixels(
            outputs, inputs["spatial_shapes"], tuple(image.shape[-2:]), backbone.patch_size, backbone.is_naflex
        )

    return predict


def per_head_softmax(outputs: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, G*K, H, W]`` logits -> per-head class probabilities, same shape."""
    batch, channels, height, width = outputs.shape
    grouped = outputs.float().reshape(batch, num_heads, channels // num_heads, height, width)
    return grouped.softmax(dim=2).reshape(batch, channels, height, width)


def predict_image(grid: HeadGrid, image: np.ndarray, config: ExperimentConfig, device: torch.device) -> torch.Tensor:
    """One ``[H, W, 3]`` uint8 image -> ``[G*K, H, W]``: logits (probabilities with TTA) or depth."""
    eval_config = config.eval
    if eval_config.mode == "native":
        return predict_native(grid, [image], max_num_patches=config.model.max_num_patches)[0].float()
    window = window_predictor(grid, config.model.max_num_patches)
    crop, stride = tuple(eval_config.crop_size), tuple(eval_config.stride)

    def once(view: torch.Tensor) -> torch.Tensor:
        return predict_whole(window, view) if eval_config.mode == "whole" else slide_window(window, view, crop, stride)

    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float()
    if not eval_config.flip and list(eval_config.scales) == [1.0]:
        return once(tensor)[0]
    if config.task == "segmentation":
        def probabilities(view: torch.Tensor) -> torch.Tensor:
            return per_head_softmax(once(view), grid.num_heads)

        return predict_tta(probabilities, tensor, eval_config.scales, eval_config.flip, task="depth")[0]
    return predict_tta(once, tensor, eval_config.scales, eval_config.flip, task="depth")[0]


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
    target_key = TARGET_KEYS[config.task]
    evaluators = [build_evaluator(config, ignore_index_of(dataset)).to(device) for _ in range(grid.num_heads)]
    was_training = grid.training
    grid.eval()
    with torch.inference_mode():
        for index in shard(len(dataset), rank, world_size):
            item = dataset[index]
            target = torch.as_tensor(np.asarray(item[target_key])).to(device)
            with autocast() if autocast is not None else torch.autocast("cpu", enabled=False):
                outputs = predict_image(grid, item["image"], config, device)
            for evaluator, head_scores in zip(evaluators, outputs.chunk(grid.num_heads, dim=0)):
                prediction = scores_to_prediction(head_scores, tuple(target.shape), config.task)
                update_evaluator(evaluator, prediction, target, config.task)
    grid.train(was_training)
    return [evaluator.compute() for evaluator in evaluators]


def main_metric(task: str) -> tuple[str, bool]:
    """``(metric name, higher is better)`` that picks the best head and checkpoint."""
    return ("mIoU", True) if task == "segmentation" else ("abs_rel", False)
