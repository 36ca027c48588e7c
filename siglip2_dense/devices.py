"""Where models run and in which dtype, unless the caller says otherwise."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CPU; anything else as ``torch.device`` understands it."""
    return torch.device("cpu") if device is None else torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA; float32 elsewhere (bf16 matrix products are very slow on most CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory for ``train.precision``: ``auto`` -> bf16 autocast on CUDA, none (float32) on
    CPU; ``bf16`` / ``fp32`` force it either way."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    return autocast
