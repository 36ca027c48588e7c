"""The heads' masked BatchNorm in training: statistics of the whole optimiser step's batch.

The linear-probe protocol (DINOv2 / mmsegmentation ``norm_cfg=SyncBN``) normalises with the
statistics of the whole batch. A step's batch is split over W processes (DDP) and A micro-batches
(``train.grad_accum_steps``); the training loop replaces the heads'
:class:`~siglip2_dense.heads.masked_batch_norm.MaskedBatchNorm2d` layers with
:class:`SyncMaskedBatchNorm2d` (same parameters, buffers and state-dict keys), which takes its
batch statistics over both:

- Processes (SyncBN): the real cells' count and sum, then their centred square sum, are summed over
  processes; gradients flow back through the sums. A W-process run normalises exactly as one
  process with the whole batch.
- Micro-batches (accumulation): where the normalised tensor is a function of the backbone's features
  alone (the linear and bins heads' first BatchNorm), the loop first shows every micro-batch's tensor
  to :meth:`SyncMaskedBatchNorm2d.collect`, then :meth:`SyncMaskedBatchNorm2d.pool` combines them
  (and the other processes') into the step's statistics and updates the running statistics once.
  Each micro-batch's forward then normalises with those, exactly as one forward of the whole batch
  would; :meth:`SyncMaskedBatchNorm2d.release` ends the step. The pooled mean and variance carry the
  gradient of the micro-batch's own cells (summed over processes), so the gradient of a micro-batch's
  loss with respect to its features is exact; what accumulation cannot give is the gradient of the
  *other* micro-batches' losses through the shared statistics into this micro-batch's features. It
  is zero when nothing before the BatchNorm trains (a frozen backbone: the step is then exactly the
  whole batch's), and missing for a tuned backbone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from siglip2_dense.distributed import all_reduce_sum, differentiable_sum
from siglip2_dense.errors import RequestError
from siglip2_dense.heads.masked_batch_norm import MaskedBatchNorm2d, check_cell_count, masked_moments


class SyncMaskedBatchNorm2d(MaskedBatchNorm2d):
    """``MaskedBatchNorm2d`` whose training statistics cover every process's batch and, between
    :meth:`pool` and :meth:`release`, every micro-batch of the step.

    ``forward(x [B, C, H, W], mask [B, H, W] bool) -> [B, C, H, W]``, zero where ``mask`` is False;
    outside training, or alone without pooled statistics, it is exactly ``MaskedBatchNorm2d``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._micro_batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._step_statistics: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @torch.no_grad()
    def collect(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """Remember the count, sum and centred square sum of one micro-batch's real cells of ``x [B, C, H, W]``."""
        self._micro_batches.append(masked_moments(*self._float_inputs(x, mask)))

    @torch.no_grad()
    def pool(self) -> None:
        """Combine the collected micro-batches of every process into the step's statistics; update the
        running statistics once with them (one step = one ``num_batches_tracked``, as one forward)."""
        if not self._micro_batches:
            raise RequestError("SyncMaskedBatchNorm2d.pool: no micro-batch was collected for this step; call "
                               "collect(x, mask) for each micro-batch first")
        counts, totals, squares = (torch.stack(parts) for parts in zip(*self._micro_batches))
        summed = all_reduce_sum(torch.cat([totals.sum(dim=0), counts.sum().reshape(1)]))
        count, mean = summed[-1], summed[:-1] / summed[-1]
        # Chan et al.: each group's square sum about its own mean, plus its size times its mean's offset squared
        group_means = totals / counts.clamp_min(1)[:, None]
        spread = squares.sum(dim=0) + (counts[:, None] * (group_means - mean).square()).sum(dim=0)
        var = all_reduce_sum(spread) / count
        check_cell_count(count)
        if self.track_running_stats:
            self._update_running_stats(mean, var * count / (count - 1))
        self._micro_batches = []
        self._step_statistics = (mean, var, count)

    def release(self) -> None:
        """End the step: back to per-call statistics (and drop anything collected but not pooled)."""
        self._micro_batches = []
        self._step_statistics = None

    def _training_statistics(self, values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._step_statistics is None:
            return super()._training_statistics(values, weights)
        mean, var, count = self._step_statistics
        if not values.requires_grad:
            return mean, var
        # The values are the pooled ones; the gradient is that of this micro-batch's share:
        # d mean / dx = 1 / n and d var / dx = 2 (x - mean) / n over its real cells (summed over processes).
        share = torch.cat([(values * weights).sum(dim=(0, 2, 3)),
                           ((values - mean[None, :, None, None]) * weights).square().sum(dim=(0, 2, 3))])
        share = differentiable_sum(share)
        change = (share - share.detach()) / count
        channels = mean.numel()
        return mean + change[:channels], var + change[channels:]

    def _batch_statistics(
        self, values: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, biased variance and count of the real cells of every process's ``values``.

        Count and sum, then the centred square sum, are summed over processes; gradients flow back
        through the sums. Only in training with running statistics (every process then takes the
        same number of steps, so the collectives pair up); otherwise, or alone, the local statistics.
        """
        if not (self.training and self.track_running_stats and _is_distributed()):
            return super()._batch_statistics(values, weights)
        total = differentiable_sum(torch.cat([(values * weights).sum(dim=(0, 2, 3)), weights.sum().reshape(1)]))
        count = total[-1]
        mean = total[:-1] / count
        centred = (values - mean[None, :, None, None]) * weights
        return mean, differentiable_sum(centred.square().sum(dim=(0, 2, 3))) / count, count


def _is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def convert_to_sync_batch_norm(module: nn.Module) -> nn.Module:
    """Swap every ``MaskedBatchNorm2d`` in ``module`` for a ``SyncMaskedBatchNorm2d`` holding the same tensors.

    As ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``: new modules, parameters and buffers
    moved over (not copied), so an optimizer built afterwards sees them. Returns ``module``.
    """
    for name, child in module.named_children():
        if type(child) is MaskedBatchNorm2d:
            synced = SyncMaskedBatchNorm2d(
                child.num_features, eps=child.eps, momentum=child.momentum, affine=child.affine,
                track_running_stats=child.track_running_stats,
            )
            synced.load_state_dict(child.state_dict(), strict=True)
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            synced.to(device=next(iter(child.buffers())).device)
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            convert_to_sync_batch_norm(child)
    return module
