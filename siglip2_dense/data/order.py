"""A data order and augmentation that depend only on (seed, step): what makes a resumed run exact.

- The global batch of optimiser step ``t`` is a pure function of ``(seed, t)``: epoch
  ``e = t // B_e`` (``B_e = N // batch_size`` full batches per epoch, the remainder dropped), the
  epoch's order is ``randperm(N)`` seeded by ``(seed, e)``, and the batch is its slice
  ``t % B_e``. It is cut into ``grad_accum_steps`` micro-batches and process ``r`` of ``W`` takes
  the ``r``-th of ``W`` equal parts of each, so the union over processes of micro-batch ``m`` is
  the 1-process micro-batch ``m`` (and synchronised BatchNorm sees the same images).
- Each item's augmentation is seeded by ``(seed, epoch, index)`` (or ``(seed, view, image)`` with
  fixed views), never by a global random state, so it is the same whichever process, worker or
  resumed run draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from siglip2_dense.errors import ConfigError, RequestError

EPOCH_STREAM, VIEW_STREAM, ORDER_STREAM = 0, 1, 2


def derived_seed(*keys: int) -> int:
    """A 32-bit seed from integer keys (NumPy's ``SeedSequence``: well mixed, no collisions by addition)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def batches_per_epoch(num_items: int, batch_size: int) -> int:
    """Full global batches in one pass over ``num_items`` items (the remainder is dropped)."""
    count = num_items // batch_size
    if count == 0:
        raise ConfigError(f"train.batch_size={batch_size} is larger than the training set ({num_items} items)")
    return count


def data_position(step: int, num_items: int, batch_size: int) -> tuple[int, int]:
    """``(epoch, batch index within the epoch)`` of optimiser step ``step``."""
    return divmod(step, batches_per_epoch(num_items, batch_size))


def epoch_order(seed: int, epoch: int, num_items: int) -> torch.Tensor:
    """``[N]`` long: the permutation of epoch ``epoch``."""
    generator = torch.Generator().manual_seed(derived_seed(seed, ORDER_STREAM, epoch))
    return torch.randperm(num_items, generator=generator)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches of ``(item index, epoch)`` keys for one process, optimiser steps ``start..end-1``.

    Yields ``grad_accum_steps`` lists per step, each of ``batch_size / (world_size * grad_accum_steps)``
    keys (this process's part of each micro-batch). Requires that this divides evenly.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        start_step: int,
        end_step: int,
        rank: int = 0,
        world_size: int = 1,
        grad_accum_steps: int = 1,
    ) -> None:
        if batch_size % (world_size * grad_accum_steps):
            raise ConfigError(
                f"train.batch_size={batch_size} must be a multiple of world size ({world_size}) x "
                f"train.grad_accum_steps ({grad_accum_steps})"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.end_step = start_step, end_step
        self.rank, self.world_size, self.grad_accum_steps = rank, world_size, grad_accum_steps
        self.per_process = batch_size // world_size
        self.micro = self.per_process // grad_accum_steps
        batches_per_epoch(num_items, batch_size)  # raises early when the set is too small

    def __len__(self) -> int:
        return (self.end_step - self.start_step) * self.grad_accum_steps

    def global_batch(self, step: int) -> tuple[int, list[int]]:
        """``(epoch, item indices [batch_size])`` of step ``step``, the same in every process."""
        epoch, position = data_position(step, self.num_items, self.batch_size)
        if getattr(self, "_cached_epoch", None) != epoch:
            self._cached_epoch, self._cached_order = epoch, epoch_order(self.seed, epoch, self.num_items)
        start = position * self.batch_size
        return epoch, self._cached_order[start : start + self.batch_size].tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start_step, self.end_step):
            epoch, indices = self.global_batch(step)
            per_micro = self.batch_size // self.grad_accum_steps
            for micro in range(self.grad_accum_steps):
                part = indices[micro * per_micro : (micro + 1) * per_micro]
                yield [(index, epoch) for index in part[self.rank * self.micro : (self.rank + 1) * self.micro]]


def seed_transform(transform: Callable[[dict[str, Any]], dict[str, Any]], seed: int) -> None:
    """Reseed a random item transform (a ``PairedTransform``: albumentations ``Compose`` in ``.pipeline``)."""
    pipeline = getattr(transform, "pipeline", None)
    if pipeline is None or not hasattr(pipeline, "set_random_seed"):
        raise RequestError(
            f"{type(transform).__name__} cannot be reseeded per item; expected a PairedTransform "
            "(siglip2_dense.data.transforms) whose .pipeline is an albumentations Compose"
        )
    pipeline.set_random_seed(seed)


class SeededViews(Dataset):
    """Training items with an augmentation seeded per item, indexed by ``(index, epoch)`` keys.

    Args:
        dataset: items without a transform (``{"image", "mask" | "depth", "path"}``).
        transform: the random training transform (reseeded before every item).
        seed: the run's seed.
        views: 0: item ``i`` of epoch ``e`` is image ``i`` augmented with seed ``(seed, e, i)``;
            ``V > 0``: the set has ``V * N`` items, item ``k`` is view ``k // N`` of image ``k % N``,
            augmented with seed ``(seed, view, image)`` whatever the epoch.
    """

    def __init__(
        self, dataset: Dataset, transform: Callable[[dict[str, Any]], dict[str, Any]], seed: int, views: int = 0
    ) -> None:
        self.dataset, self.transform, self.seed, self.views = dataset, transform, seed, views
        self.num_images = len(dataset)

    def __len__(self) -> int:
        return self.num_images * self.views if self.views else self.num_images

    def item_seed(self, index: int, epoch: int) -> int:
        if self.views:
            view, image = divmod(index, self.num_images)
            return derived_seed(self.seed, VIEW_STREAM, view, image)
        return derived_seed(self.seed, EPOCH_STREAM, epoch, index)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, epoch = key
        item = self.dataset[index % self.num_images]
        seed_transform(self.transform, self.item_seed(index, epoch))
        return self.transform(item)
