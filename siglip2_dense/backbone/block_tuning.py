"""Which part of a vision tower trains: nothing (a probe), everything, or the last N blocks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from siglip2_dense.errors import RequestError


class BlockTuning(nn.Module):
    """Base of the backbones: a stem, a sequence of blocks and a tail, of which a suffix trains.

    Frozen parameters never get gradients and frozen modules stay in eval mode whatever
    ``train()`` is asked; tuned ones follow it. Subclasses call :meth:`configure_tuning` once
    their modules exist.
    """

    num_blocks: int
    first_tuned_block: int

    def configure_tuning(
        self, freeze: bool, tune_last_blocks: int, tower: nn.Module, stem: Sequence[nn.Module],
        blocks: Sequence[nn.Module], tail: Sequence[nn.Module],
    ) -> None:
        """Tune nothing (``freeze=True``), everything (``freeze=False``), or with ``freeze=True``
        the last ``tune_last_blocks`` blocks and the ``tail`` (final norm, pooling head) after them.

        ``tower`` is the module holding them all (kept in eval mode as a whole when frozen); the
        lists are kept in plain Python lists so the modules are not registered twice."""
        self.num_blocks = len(blocks)
        if not 0 <= tune_last_blocks <= self.num_blocks:
            raise RequestError(f"tune_last_blocks={tune_last_blocks}: expected 0..{self.num_blocks}")
        self.first_tuned_block = self.num_blocks - tune_last_blocks if freeze else 0
        self._tower, self._stem, self._blocks, self._tail = [tower], list(stem), list(blocks), list(tail)
        for module in (*self._stem, *self._blocks, *self._tail):
            module.requires_grad_(self.first_tuned_block == 0)
        if self.tuned:
            for module in (*self._blocks[self.first_tuned_block :], *self._tail):
                module.requires_grad_(True)
        self.train(self.training)

    @property
    def frozen(self) -> bool:
        """True when no parameter of the tower is tuned."""
        return self.first_tuned_block >= self.num_blocks

    @property
    def tuned(self) -> bool:
        """True when at least part of the tower is tuned (its weights belong in a checkpoint)."""
        return not self.frozen

    def train(self, mode: bool = True) -> BlockTuning:
        """Frozen modules stay in eval mode whatever ``mode`` is; tuned ones follow it."""
        super().train(mode)
        if getattr(self, "_blocks", None) is not None and self.first_tuned_block > 0:
            frozen = [*self._stem, *self._blocks[: self.first_tuned_block]]
            if self.frozen:
                frozen = self._tower
            for module in frozen:
                module.eval()
        return self
