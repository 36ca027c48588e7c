"""Processes: ``torchrun`` environment -> process group, and the few collectives the loop needs.

``torchrun --nproc_per_node N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address; without them the run is one process and nothing is initialised. The backend is NCCL on
CUDA and gloo on CPU; process ``r`` uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from siglip2_dense.errors import ProcessGroupError, Siglip2DenseError

# what gloo and NCCL say when the process at the other end of a collective is gone
_LOST_PROCESS = re.compile(r"gloo|nccl|connection (reset|closed|refused)|broken pipe", re.IGNORECASE)


@dataclass
class ProcessContext:
    """Where this process stands: its rank, the world size, its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_processes(device: torch.device) -> ProcessContext:
    """Join the process group ``torchrun`` describes (if any); pick this process's device.

    Args:
        device: ``cpu`` or ``cuda`` (the index is replaced by ``LOCAL_RANK`` when distributed).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank if world_size > 1 else (device.index or 0))
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                device_id=device if device.type == "cuda" else None)
    return ProcessContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def close_processes(context: ProcessContext) -> None:
    """Leave the process group (when this run joined one)."""
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def raise_if_lost_process(error: BaseException, context: ProcessContext) -> None:
    """Raise :class:`ProcessGroupError` (from ``error``) when ``error`` is a collective that failed in a
    distributed run, which means another process stopped: killed, out of memory, or its own error.

    Call it on an exception escaping a distributed run; it returns when ``error`` is something else.
    """
    if not context.distributed or isinstance(error, Siglip2DenseError):
        return
    if isinstance(error, dist.DistError) or _LOST_PROCESS.search(str(error)):
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ProcessGroupError(
            f"process {context.rank} of {context.world_size} lost contact with the others ({reason}); another "
            "process stopped first: see its error or torchrun's summary, then rerun (training: with --resume)"
        ) from error


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (a copy; the input itself when there is one process). No gradient."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    reduced = tensor.detach().clone()
    dist.all_reduce(reduced)
    return reduced


class _DifferentiableSum(torch.autograd.Function):
    """``y = sum over processes of x``; the gradient of each ``x`` is the sum of every process's ``dL/dy``."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        reduced = tensor.clone()
        dist.all_reduce(reduced)
        return reduced

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        reduced = grad.contiguous().clone()
        dist.all_reduce(reduced)
        return reduced


def differentiable_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes that gradients flow through (SyncBatchNorm statistics)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _DifferentiableSum.apply(tensor)


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value`` (JSON-like data, in memory), in rank order."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [value]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    """Wait for every process (no-op alone)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` in every process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
