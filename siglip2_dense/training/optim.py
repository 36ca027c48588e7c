"""AdamW with parameter groups, the warm-up + poly / cosine / one-cycle learning-rate schedules, and beta1 schedules.

Groups: for every head, its weights (decayed) and its 1-D parameters (norm scales, biases: no
decay) at that head's learning rate; for a tuned backbone the same split at ``lr *
backbone_lr_multiplier``, with position tables, MAP-head probes and class / register tokens
also undecayed (mmsegmentation's ``pos_embed`` / ``norm`` / ``cls_token`` ``decay_mult=0``).
``weight_decay_on_norms_and_biases``: each head is one group, all decayed (DINOv2's ADE20K config
has no ``paramwise_cfg``; DINOv3's segmentation/train.py:234-243 and depth/train.py:167-176 build one group).

Schedule (mmcv's ``PolyLrUpdaterHook`` / ``CosineAnnealing`` with linear warm-up, by iteration):
the regular lr at step ``t`` of ``T`` is ``min + (base - min) * (1 - t / T) ** power`` (poly) or
``min + (base - min) * (1 + cos(pi * t / T)) / 2`` (cosine), ``min = base * min_lr_ratio``; during
the first ``W`` steps it is multiplied by ``1 - (1 - t / W) * (1 - warmup_ratio)``.

``warmup_one_cycle_cosine`` is DINOv3's ``WarmupOneCycleLR`` with ``anneal_strategy='cos'``
(facebookresearch/dinov3 dinov3/eval/segmentation/schedulers.py:97-124, the same in
dinov3/eval/depth/schedulers.py:102-129), as a multiplier of the peak lr, ``min = 1 / div_factor /
final_div_factor``: for ``t < W`` with ``warmup_ratio`` > 0 ``(1 - (1 - t/W)(1 - r)) * (1 - t/T)``,
with ``warmup_ratio`` = 0 ``1 / final_div_factor + (1 + cos(pi t / T)) / 2 * t / W``; afterwards
``min + (1 - min) * (1 + cos(pi (t + 1) / T)) / 2``.

Beta1 (``beta1_schedule``) at step ``t``, with ``[base, max] = beta1_range``:
``mmcv_one_cycle`` (mmcv ``OneCycleMomentumUpdaterHook``, open-mmlab/mmcv
mmcv/runner/hooks/momentum_updater.py, ``pct_start=0.3``, two phases): ``e1 = 0.3 T - 1``; ``t <= e1``:
``cos_anneal(max, base, t / e1)``; else ``cos_anneal(base, max, (t - e1) / (T - 1 - e1))``.
``warmup_one_cycle`` (``WarmupOneCycleLR(use_beta1=True)``, schedulers.py:101-121): 0 while ``t < W``
(its ``momentum = 0`` is never reassigned there), then ``cos_anneal(base, max, (t - W) / (T - W))``.
``cos_anneal(a, b, p) = b + (a - b) (1 + cos(pi p)) / 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from siglip2_dense.config import TrainConfig

MMCV_PCT_START = 0.3  # OneCycleMomentumUpdaterHook(pct_start=0.3) default; DINOv2's NYU config sets none
UNDECAYED_NAME_PARTS = ("position_embedding", "pos_embed", "cls_token", "reg_token", "register_tokens", "probe")


@dataclass
class HeadGroup:
    """One trained head: its parameters and its peak learning rate."""

    parameters: list[tuple[str, nn.Parameter]]
    lr: float


def is_decayed(name: str, parameter: nn.Parameter) -> bool:
    """Weight decay applies to matrices and kernels, never to norms, biases or position tables."""
    return parameter.ndim > 1 and not any(part in name for part in UNDECAYED_NAME_PARTS)


def split_by_decay(
    named: Sequence[tuple[str, nn.Parameter]], lr: float, weight_decay: float, label: str, decay_all: bool = False
) -> list[dict]:
    """Two AdamW groups (decayed, undecayed) of the trainable parameters in ``named``; empty ones dropped.

    ``decay_all``: one group, every parameter decayed (``weight_decay_on_norms_and_biases``).
    """
    trainable = [(n, p) for n, p in named if p.requires_grad]
    if decay_all:
        params = [p for _, p in trainable]
        return [{"params": params, "lr": lr, "weight_decay": weight_decay, "name": f"{label}.decay"}] if params else []
    decayed = [p for n, p in trainable if is_decayed(n, p)]
    undecayed = [p for n, p in trainable if not is_decayed(n, p)]
    groups = []
    if decayed:
        groups.append({"params": decayed, "lr": lr, "weight_decay": weight_decay, "name": f"{label}.decay"})
    if undecayed:
        groups.append({"params": undecayed, "lr": lr, "weight_decay": 0.0, "name": f"{label}.no_decay"})
    return groups


def build_optimizer(
    heads: Sequence[HeadGroup],
    backbone: nn.Module | None,
    config: TrainConfig,
) -> torch.optim.AdamW:
    """AdamW over every head (each at its own lr) and, when given, the tuned backbone parameters.

    Args:
        heads: the heads and their peak learning rates (one per lr / layer grid entry).
        backbone: the backbone when part of it is tuned (its lr: ``config.lr * backbone_lr_multiplier``),
            else None.
        config: weight decay and betas come from here.
    """
    groups: list[dict] = []
    for index, head in enumerate(heads):
        groups += split_by_decay(head.parameters, head.lr, config.weight_decay, f"head{index}",
                                 decay_all=config.weight_decay_on_norms_and_biases)
    if backbone is not None:
        backbone_lr = config.lr * config.backbone_lr_multiplier
        groups += split_by_decay(list(backbone.named_parameters()), backbone_lr, config.weight_decay, "backbone")
    beta1, beta2 = config.betas
    return torch.optim.AdamW(groups, betas=(float(beta1), float(beta2)))


def cos_anneal(start: float, end: float, progress: float) -> float:
    """``end + (start - end) (1 + cos(pi progress)) / 2`` (mmcv's and DINOv3's ``annealing_cos``)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * progress) + 1.0)


def one_cycle_lr_factor(step: int, config: TrainConfig) -> float:
    """DINOv3 ``WarmupOneCycleLR`` (cos) as a multiplier of the peak lr (module docstring)."""
    total, warmup = config.iterations, config.warmup_iterations
    if step < warmup:
        if config.warmup_ratio:
            k = (1.0 - step / warmup) * (1.0 - config.warmup_ratio)
            return (1.0 - k) * (1.0 - step / total)
        return 1.0 / config.final_div_factor + (1.0 + math.cos(math.pi * step / total)) / 2.0 * step / warmup
    floor = 1.0 / config.div_factor / config.final_div_factor
    return cos_anneal(1.0, floor, (step + 1) / total)  # "step_num_to_use += 1" for cos (schedulers.py:117-118)


def beta1_at(step: int, config: TrainConfig) -> float | None:
    """AdamW's beta1 at optimiser step ``step`` under ``config.beta1_schedule`` (None: ``none``, betas as given)."""
    base, peak = (float(v) for v in config.beta1_range)
    total = config.iterations
    if config.beta1_schedule == "mmcv_one_cycle":
        end_first = float(MMCV_PCT_START * total) - 1
        if step <= end_first:
            return cos_anneal(peak, base, step / end_first)
        return cos_anneal(base, peak, (step - end_first) / (total - 1 - end_first))
    if config.beta1_schedule == "warmup_one_cycle":
        warmup = config.warmup_iterations
        if step < warmup:
            return 0.0
        return cos_anneal(base, peak, (step - warmup) / float(total - warmup))
    return None


def lr_factor(step: int, config: TrainConfig) -> float:
    """The multiplier of every group's peak lr at optimiser step ``step`` (module docstring)."""
    if config.schedule == "warmup_one_cycle_cosine":
        return one_cycle_lr_factor(step, config)
    total = config.iterations
    progress = min(step, total) / total
    floor = config.min_lr_ratio
    if config.schedule == "poly":
        regular = floor + (1.0 - floor) * (1.0 - progress) ** config.poly_power
    else:
        regular = floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if step < config.warmup_iterations:
        regular *= 1.0 - (1.0 - step / config.warmup_iterations) * (1.0 - config.warmup_ratio)
    return regular


class StepSchedule(LambdaLR):
    """``LambdaLR`` with :func:`lr_factor` that also sets every group's beta1 to :func:`beta1_at` (when
    scheduled) for the coming step, at construction and after each ``step()``, as mmcv's
    ``before_train_iter`` and DINOv3's ``get_lr`` do. Its state is LambdaLR's (JSON-safe)."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self._config = config
        super().__init__(optimizer, lambda step: lr_factor(step, config))

    def step(self, epoch: int | None = None) -> None:  # noqa: D102
        super().step(epoch)
        beta1 = beta1_at(self.last_epoch, self._config)
        if beta1 is not None:
            for group in self.optimizer.param_groups:
                group["betas"] = (beta1, group["betas"][1])

    def state_dict(self) -> dict:
        state = super().state_dict()
        state.pop("_config", None)
        return state


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> StepSchedule:
    """:class:`StepSchedule` (lr and beta1); call ``step()`` once after every optimiser step."""
    return StepSchedule(optimizer, config)


def clip_gradients(parameter_sets: Sequence[Sequence[nn.Parameter]], max_norm: float | None) -> list[float]:
    """Clip each set's global gradient norm to ``max_norm`` separately (heads of a grid are independent).

    Returns each set's norm before clipping (0.0 when no gradients), or [] when ``max_norm`` is None.
    """
    if max_norm is None:
        return []
    norms = []
    for parameters in parameter_sets:
        with_grad = [p for p in parameters if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(with_grad, max_norm) if with_grad else torch.zeros(())
        norms.append(float(norm))
    return norms
