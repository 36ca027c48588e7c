"""SyncBatchNorm for the heads' masked BatchNorm: statistics over the global batch of all processes.

The linear-probe protocol (DINOv2 / mmsegmentation ``norm_cfg=SyncBN``) normalises with the
statistics of the whole batch. In DDP each process sees ``1 / W`` of it, so the heads'
:class:`~siglip2_dense.heads.masked_batch_norm.MaskedBatchNorm2d` layers are replaced by
:class:`SyncMaskedBatchNorm2d`, which sums the real cells' count, sum and centred square sum over
processes (gradients flow back through the sums), so a W-process run normalises exactly as one
process with the whole batch. Same parameters, buffers and state-dict keys.
"""

from __future__ import annotations

import torch
from torch import nn

from siglip2_dense.distributed import differentiable_sum
from siglip2_dense.heads.masked_batch_norm import MaskedBatchNorm2d


class SyncMaskedBatchNorm2d(MaskedBatchNorm2d):
    """``MaskedBatchNorm2d`` whose training statistics cover every process's batch.

    ``forward(x [B, C, H, W], mask [B, H, W] bool) -> [B, C, H, W]``, zero where ``mask`` is False;
    outside training, or alone, it is exactly ``MaskedBatchNorm2d``.
    """

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
