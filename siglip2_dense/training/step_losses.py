"""The loss of one training micro-batch per head, scaled so that DDP's gradient average and accumulation's
sum give the gradient of the loss over the whole global batch."""

from __future__ import annotations

from typing import Any

import torch

from siglip2_dense.config import ExperimentConfig
from siglip2_dense.data.ade20k import IGNORE_INDEX
from siglip2_dense.distributed import ProcessContext, all_reduce_sum
from siglip2_dense.losses import cross_entropy_denominator, depth_loss, one_hot_binary_cross_entropy_sum
from siglip2_dense.losses.normals import normals_loss


def loss_normaliser(config: ExperimentConfig, micro_batches: list[dict[str, Any]], context: ProcessContext) -> float:
    """Segmentation: labelled pixels (``train.loss_average: labelled_pixels``) or all pixels (``all_pixels``,
    mmseg ``avg_non_ignore=False``; always with ``binary_cross_entropy``) in the whole global batch (all processes, all micro-batches); depth: 1.
    With equal crops on every process, DDP's average of per-process means equals this global mean."""
    if config.task != "segmentation":
        return 1.0
    average = "all_pixels" if config.train.segmentation_loss == "binary_cross_entropy" else config.train.loss_average
    labelled = sum(cross_entropy_denominator(batch["target"], IGNORE_INDEX, average)
                   for batch in micro_batches)
    total = all_reduce_sum(torch.tensor([float(labelled)], dtype=torch.float64, device=context.device))
    return max(float(total[0]), 1.0)


def head_losses(
    outputs: list[torch.Tensor], target: torch.Tensor, config: ExperimentConfig, normaliser: float,
    context: ProcessContext, step: int = 0,
) -> torch.Tensor:
    """``[G]`` losses of one micro-batch, scaled so that DDP's gradient average and accumulation sum
    give the gradient of the global-batch loss. ``step`` (0-based) drives a depth loss's warm-up
    (DINOv2's SigLoss: mean term only while ``step < loss_args.warm_up_iterations``)."""
    depth_args = dict(config.train.loss_args)
    if depth_args.get("form") == "dinov2":
        depth_args["step"] = step
    losses = []
    for head_outputs in outputs:
        if config.task == "segmentation" and config.train.segmentation_loss == "binary_cross_entropy":
            summed = one_hot_binary_cross_entropy_sum(head_outputs.float(), target.long(), IGNORE_INDEX)
            losses.append(summed / (normaliser * head_outputs.shape[1]) * context.world_size)
        elif config.task == "segmentation":
            summed = torch.nn.functional.cross_entropy(head_outputs.float(), target.long(), ignore_index=IGNORE_INDEX,
                                                       reduction="sum")
            losses.append(summed / normaliser * context.world_size)
        elif config.task == "normals":
            loss = normals_loss(head_outputs.float(), target.float(), **config.train.loss_args)
            losses.append(loss / config.train.grad_accum_steps)
        else:
            loss = depth_loss(head_outputs.float(), target.float(), config.data.min_depth, config.data.max_depth,
                              **depth_args)
            losses.append(loss / config.train.grad_accum_steps)
    return torch.stack(losses)
