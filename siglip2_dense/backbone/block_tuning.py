"""Which part of a vision tower trains: nothing (a probe), everything, the last N blocks, or a
chosen set of parameters spread over every block (CAT-Seg's attention-only fine-tuning)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from siglip2_dense.errors import RequestError


class BlockTuning(nn.Module):
    """Base of the backbones: a stem, a sequence of blocks and a tail, of which a suffix trains.

    Frozen parameters never get gradients and frozen modules stay in eval mode whatever
    ``train()`` is asked; tuned ones follow it. Subclasses call :meth:`configure_tuning` once
    their modules exist.

    ``first_tuned_block`` is the first block holding a parameter that trains (0 also when the
    stem trains; ``num_blocks`` when nothing does): the forward builds a graph from there on.
    """

    num_blocks: int
    first_tuned_block: int
    tune_attention: bool = False

    def configure_tuning(
        self, freeze: bool, tune_last_blocks: int, tower: nn.Module, stem: Sequence[nn.Module],
        blocks: Sequence[nn.Module], tail: Sequence[nn.Module], tune_only: Sequence[nn.Parameter] | None = None,
    ) -> None:
        """Tune nothing (``freeze=True``), everything (``freeze=False``), or with ``freeze=True``
        the last ``tune_last_blocks`` blocks and the ``tail`` (final norm, pooling head) after them.

        ``tune_only`` (with ``freeze=True``, ``tune_last_blocks=0``): exactly these parameters
        train, wherever they are. The children of the stem, the blocks and the tail that hold
        parameters, none of them trained (layer norms, MLPs, the patch embedding), stay in eval mode.

        ``tower`` is the module holding them all (kept in eval mode as a whole when frozen); the
        lists are kept in plain Python lists so the modules are not registered twice."""
        self.num_blocks = len(blocks)
        if not 0 <= tune_last_blocks <= self.num_blocks:
            raise RequestError(f"tune_last_blocks={tune_last_blocks}: expected 0..{self.num_blocks}")
        self._tower, self._stem, self._blocks, self._tail = [tower], list(stem), list(blocks), list(tail)
        if tune_only is not None:
            self._tune_only(tune_only)
            return
        self.first_tuned_block = self.num_blocks - tune_last_blocks if freeze else 0
        for module in (*self._stem, *self._blocks, *self._tail):
            module.requires_grad_(self.first_tuned_block == 0)
        if self.tuned:
            for module in (*self._blocks[self.first_tuned_block :], *self._tail):
                module.requires_grad_(True)
        self._frozen_modules: list[nn.Module] = []
        if self.frozen:
            self._frozen_modules = list(self._tower)
        elif self.first_tuned_block > 0:
            self._frozen_modules = [*self._stem, *self._blocks[: self.first_tuned_block]]
        self.train(self.training)

    def _tune_only(self, parameters: Sequence[nn.Parameter]) -> None:
        tower = self._tower[0]
        tower.requires_grad_(False)
        for parameter in parameters:
            parameter.requires_grad_(True)

        def trains(module: nn.Module) -> bool:
            return any(p.requires_grad for p in module.parameters())

        self.first_tuned_block = next((i for i, block in enumerate(self._blocks) if trains(block)), self.num_blocks)
        if any(trains(module) for module in self._stem):
            self.first_tuned_block = 0
        if self.frozen:
            self._frozen_modules = list(self._tower)
        else:
            parts = [child for module in (*self._stem, *self._blocks) for child in module.children()]
            parts += list(self._tail)
            self._frozen_modules = [m for m in parts if any(True for _ in m.parameters()) and not trains(m)]
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
        for module in getattr(self, "_frozen_modules", ()):
            module.eval()
        return self
