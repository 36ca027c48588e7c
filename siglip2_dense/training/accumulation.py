"""Gradient accumulation that keeps the whole batch's BatchNorm (``train.grad_accum_steps > 1``).

A step of A micro-batches should train as one forward of the whole batch. The loss already is the
whole batch's (:func:`~siglip2_dense.training.step_losses.head_losses`); BatchNorm is not, unless its
statistics are: a head whose first BatchNorm normalises a function of the backbone's features alone
(it has ``batch_norm_input``, as :class:`~siglip2_dense.heads.LinearHead` and
:class:`~siglip2_dense.heads.BinsDepthHead`) gets them in two passes (see
:mod:`.sync_batch_norm`):

1. :func:`collect_step_statistics` for every micro-batch's features (no gradient), then
   :func:`pool_step_statistics`: the step's statistics, running statistics updated once;
2. the usual forward and backward of each micro-batch, normalised with them; then
   :func:`release_step_statistics`.

With a frozen backbone one optimiser step then equals one step with the whole batch (weights and
running statistics to float rounding), as N processes with SyncBN do. :func:`accumulation_caveats`
says where it cannot: BatchNorm after trained layers (DPT with ``use_batchnorm``), whose input
changes with the weights being differentiated; a tuned backbone (the statistics are exact, their
gradient into the backbone is taken per micro-batch); depth losses, which pool over the batch
(each micro-batch's loss is averaged, as each process's is in DDP).
"""

from __future__ import annotations

from torch import nn

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.head_grid import HeadGrid, select_layers
from siglip2_dense.heads.masked_batch_norm import MaskedBatchNorm2d
from siglip2_dense.model import cast_features, head_dtype
from siglip2_dense.training.sync_batch_norm import SyncMaskedBatchNorm2d


def has_step_statistics(head: nn.Module) -> bool:
    """Whether ``head``'s first BatchNorm can take the whole step's statistics (its input is the features')."""
    return hasattr(head, "batch_norm_input") and isinstance(getattr(head, "norm", None), SyncMaskedBatchNorm2d)


def per_micro_batch_norms(head: nn.Module) -> list[str]:
    """Names of ``head``'s BatchNorm layers that normalise each micro-batch with its own statistics."""
    pooled = head.norm if has_step_statistics(head) else None
    return [name for name, module in head.named_modules()
            if isinstance(module, MaskedBatchNorm2d) and module is not pooled]


def collect_step_statistics(grid: HeadGrid, features: DenseFeatures) -> None:
    """Pass 1, one micro-batch: show its features to every pooling head's BatchNorm (call without gradients)."""
    for head, positions in zip(grid.heads, grid.positions):
        if has_step_statistics(head):
            chosen = cast_features(select_layers(features, positions), head_dtype(head))
            head.norm.collect(*head.batch_norm_input(chosen))


def pool_step_statistics(grid: HeadGrid) -> None:
    """End of pass 1: every pooling BatchNorm combines its micro-batches (and processes) and updates its
    running statistics once."""
    for head in grid.heads:
        if has_step_statistics(head):
            head.norm.pool()


def release_step_statistics(grid: HeadGrid) -> None:
    """End of the step: the pooling BatchNorms go back to per-call statistics."""
    for head in grid.heads:
        if has_step_statistics(head):
            head.norm.release()


def accumulation_caveats(grid: HeadGrid, task: str) -> list[str]:
    """Why an accumulated step differs from one step with the whole batch (empty when it does not)."""
    caveats = []
    for index, head in enumerate(grid.heads):
        names = per_micro_batch_norms(head)
        if names:
            caveats.append(
                f"head {index} ({type(head).__name__}) has BatchNorm after trained layers ({', '.join(names)}): "
                "each micro-batch is normalised with its own statistics and updates the running statistics; "
                "set use_batchnorm: false or train.grad_accum_steps=1 with a larger batch for exactness"
            )
    for index, head in enumerate(grid.heads):
        if not isinstance(getattr(head, "dropout_before_norm", None), (type(None), nn.Identity)):
            caveats.append(f"head {index} ({type(head).__name__}) drops channels before its BatchNorm: the pooled "
                           "statistics pass draws other dropout masks than the forward")
    if getattr(grid.backbone, "tuned", False) and any(has_step_statistics(h) for h in grid.heads):
        caveats.append(
            "the backbone is tuned: the heads' BatchNorm statistics are the whole batch's, but their gradient "
            "into the backbone is taken within each micro-batch (and each micro-batch's features are computed "
            "twice, once for the statistics)"
        )
    if task in ("depth", "normals"):
        caveats.append(f"{task} losses pool over the batch: each micro-batch's loss is computed on its own and "
                       "the losses are averaged")
    return caveats
