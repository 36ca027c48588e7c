"""BatchNorm whose batch statistics come from the real patches only.

A padded NaFlex batch holds cells that belong to no image. ``nn.BatchNorm2d`` would average them
into its statistics, so an image's output would depend on how much padding its batch-mates
brought. :class:`MaskedBatchNorm2d` takes the mask next to the input: in training it normalises
with the mean and (biased) variance of the real cells and updates the running statistics with
them (unbiased variance, as ``nn.BatchNorm2d``); in evaluation it uses the running statistics.
Padded cells come out as zero. With a mask that is all True it equals ``nn.BatchNorm2d``.

Statistics are local to the call. The training loop swaps these layers for
:class:`~siglip2_dense.training.sync_batch_norm.SyncMaskedBatchNorm2d`, which overrides
:meth:`MaskedBatchNorm2d._training_statistics` to take them over every process and every
micro-batch of an optimiser step.
"""

from __future__ import annotations

import torch
from torch import nn

from siglip2_dense.errors import RequestError


def masked_moments(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Count ``[]``, sum ``[C]`` and centred square sum ``[C]`` of the real cells of ``values [B, C, H, W]``.

    ``weights [B, 1, H, W]`` is 1 on real cells and 0 on padding. The squares are centred on the
    cells' own mean (two passes, as :meth:`MaskedBatchNorm2d._batch_statistics`), so moments of
    several groups combine without cancellation (Chan et al.'s pairwise formula).
    """
    count = weights.sum()
    total = (values * weights).sum(dim=(0, 2, 3))
    centred = (values - (total / count.clamp_min(1))[None, :, None, None]) * weights
    return count, total, centred.square().sum(dim=(0, 2, 3))


class MaskedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` over the cells where ``mask`` is True; same parameters and state-dict keys.

    ``forward(x [B, C, H, W], mask [B, H, W] bool) -> [B, C, H, W]``, zero where ``mask`` is False.
    Statistics are computed in float32 whatever the input dtype.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        values, weights = self._float_inputs(x, mask)
        use_batch_stats = self.training or not self.track_running_stats
        if use_batch_stats:
            mean, var = self._training_statistics(values, weights)
        else:
            mean, var = self.running_mean.float(), self.running_var.float()
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            scale = scale * self.weight.float()
            shift = shift * self.weight.float() + self.bias.float()
        out = values * scale[None, :, None, None] + shift[None, :, None, None]
        return (out * weights).to(x.dtype)

    def _float_inputs(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(values [B, C, H, W] float32, weights [B, 1, H, W] float32)`` after checking ``mask`` fits ``x``."""
        if mask is None:
            mask = torch.ones(x.shape[0], *x.shape[2:], dtype=torch.bool, device=x.device)
        if mask.shape != (x.shape[0], *x.shape[2:]):
            raise RequestError(
                f"MaskedBatchNorm2d: mask {tuple(mask.shape)} does not fit input {tuple(x.shape)}; expected "
                "[B, H, W]"
            )
        return x.to(torch.float32), mask[:, None].to(torch.float32)

    def _training_statistics(self, values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean ``[C]`` and biased variance ``[C]`` to normalise with from batch statistics; in training
        with running statistics, updates them (unbiased variance)."""
        mean, var, count = self._batch_statistics(values, weights)
        check_cell_count(count)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var * count / (count - 1))
        return mean, var

    def _batch_statistics(
        self, values: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean ``[C]``, biased variance ``[C]`` and count ``[]`` of the real cells of ``values [B, C, H, W]``."""
        count = weights.sum()
        mean = (values * weights).sum(dim=(0, 2, 3)) / count
        centred = (values - mean[None, :, None, None]) * weights
        return mean, centred.square().sum(dim=(0, 2, 3)) / count, count

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased_var.detach().to(self.running_var.dtype), momentum)


def check_cell_count(count: torch.Tensor) -> None:
    """Batch statistics need more than one real cell per channel (the unbiased variance divides by count - 1)."""
    if count <= 1:
        raise RequestError(
            f"MaskedBatchNorm2d in training needs more than one real cell per channel; got {int(count)}"
        )
