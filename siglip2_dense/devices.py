"""Where models run and in which dtype, unless the caller says otherwise."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CPU; anything else as ``torch.device`` understands it."""
    return torch.device("cpu") if device is None else torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 on CUDA; float32 elsewhere (bf16 matrix products are very slow on most CPUs)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32
