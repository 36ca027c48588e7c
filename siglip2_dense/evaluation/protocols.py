"""The test-time protocols of a trained model: one ``[H, W, 3]`` image -> scores at its pixels.

``eval.mode`` -- ``whole`` (one forward), ``slide`` (mmseg's sliding window) or ``native`` (NaFlex at
the image's aspect ratio) -- optionally averaged over flips and scales (segmentation: mean of
per-head softmax, as mmseg's ``SegTTAModel``). Works on a :class:`~siglip2_dense.head_grid.HeadGrid`
(``G`` heads in one pass), so training's validation and ``tools/eval.py`` (a one-head grid) share it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from siglip2_dense.backbone.features import DenseBackbone
from siglip2_dense.config import ExperimentConfig
from siglip2_dense.errors import ConfigError
from siglip2_dense.evaluation.grid_to_pixels import heads_output_scale, outputs_to_pixels, tensor_to_images
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.inference import predict_native, predict_tta, predict_whole, slide_window

PredictFn = Callable[[torch.Tensor], torch.Tensor]



def eval_patch_budget(config: ExperimentConfig) -> int | None:
    """The NaFlex patch budget of validation and evaluation: ``model.eval_max_num_patches`` or ``max_num_patches``."""
    model = config.model
    return model.eval_max_num_patches if model.eval_max_num_patches is not None else model.max_num_patches

def check_eval_config(config: ExperimentConfig, backbone: DenseBackbone) -> None:
    """Reject eval settings the backbone cannot honour, naming the keys."""
    uses_tta = config.eval.flip or list(config.eval.scales) != [1.0]
    if config.eval.mode == "native" and not backbone.is_naflex:
        raise ConfigError("eval.mode='native' needs a NaFlex backbone; use 'whole' or 'slide' for FixRes / timm")
    if config.eval.mode == "native" and uses_tta:
        raise ConfigError("eval.flip / eval.scales (test-time augmentation) need eval.mode 'whole' or 'slide'")
    if config.task == "normals" and config.eval.flip:
        raise ConfigError("eval.flip with task=normals: averaging a mirrored view needs its normals' x negated, "
                          "which the flip TTA does not do; set eval.flip=false (eval.scales works)")


def window_predictor(grid: HeadGrid, max_num_patches: int | None) -> PredictFn:
    """``[B, 3, h, w]`` image (0..255) -> every head's outputs at its pixels ``[B, G*K, h, w]``."""
    backbone = grid.backbone
    kwargs = {"max_num_patches": max_num_patches} if backbone.is_naflex else {}

    def predict(image: torch.Tensor) -> torch.Tensor:
        inputs = backbone.preprocess(tensor_to_images(image), **kwargs)
        outputs = grid(**inputs)
        return outputs_to_pixels(
            outputs, inputs["spatial_shapes"], tuple(image.shape[-2:]), backbone.patch_size, backbone.is_naflex,
            heads_output_scale(grid.heads),
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
        if heads_output_scale(grid.heads) != 1:
            raise ConfigError("eval.mode=native crops each image's patch grid; a head predicting finer than the "
                              "grid (output_scale > 1) needs eval.mode=whole or slide")
        return predict_native(grid, grid.backbone.preprocess, [image], max_num_patches=eval_patch_budget(config))[0].float()
    window = window_predictor(grid, eval_patch_budget(config))
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
