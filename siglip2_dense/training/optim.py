"""AdamW with parameter groups, and the warm-up + poly / cosine learning-rate schedule.

Groups: for every head, its weights (decayed) and its 1-D parameters (norm scales, biases: no
decay) at that head's learning rate; for a tuned backbone the same split at ``lr *
backbone_lr_multiplier``, with position tables, MAP-head probes and class / register tokens
also undecayed (mmsegmentation's ``pos_embed`` / ``norm`` / ``cls_token`` ``decay_mult=0``).

Schedule (mmcv's ``PolyLrUpdaterHook`` / ``CosineAnnealing`` with linear warm-up, by iteration):
the regular lr at step ``t`` of ``T`` is ``min + (base - min) * (1 - t / T) ** power`` (poly) or
``min + (base - min) * (1 + cos(pi * t / T)) / 2`` (cosine), ``min = base * min_lr_ratio``; during
the first ``W`` steps it is multiplied by ``1 - (1 - t / W) * (1 - warmup_ratio)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from siglip2_dense.config import TrainConfig

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
    named: Sequence[tuple[str, nn.Parameter]], lr: float, weight_decay: float, label: str
) -> list[dict]:
    """Two AdamW groups (decayed, undecayed) of the trainable parameters in ``named``; empty ones dropped."""
    trainable = [(n, p) for n, p in named if p.requires_grad]
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
        groups += split_by_decay(head.parameters, head.lr, config.weight_decay, f"head{index}")
    if backbone is not None:
        backbone_lr = config.lr * config.backbone_lr_multiplier
        groups += split_by_decay(list(backbone.named_parameters()), backbone_lr, config.weight_decay, "backbone")
    beta1, beta2 = config.betas
    return torch.optim.AdamW(groups, betas=(float(beta1), float(beta2)))


def lr_factor(step: int, config: TrainConfig) -> float:
    """The multiplier of every group's peak lr at optimiser step ``step`` (module docstring)."""
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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> LambdaLR:
    """``LambdaLR`` with :func:`lr_factor`; call ``step()`` once after every optimiser step."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, config))


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
