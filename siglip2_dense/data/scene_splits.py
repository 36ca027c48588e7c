"""Which synthetic scenes a written data set holds, and which of them form the evaluation split.

Scene ``i`` of a set written with seed ``S`` is ``make_scene(scene_seed(S, i), H, W)``, the same scene as
``SyntheticDataset(num, S, (H, W))[i]``. Scenes with ``i % 4 == 1`` form the evaluation split
(validation / test), the others the training split, so ``num >= 2`` gives both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from siglip2_dense.data.synthetic import SyntheticScene, make_scene, scene_seed
from siglip2_dense.errors import RequestError

Size = tuple[int, int]


def is_evaluation_scene(index: int) -> bool:
    """Whether scene ``index`` belongs to the evaluation split (validation / test)."""
    return index % 4 == 1


def iter_scenes(num: int, seed: int, size: Size | Sequence[Size]) -> Iterator[tuple[int, SyntheticScene]]:
    """Yield ``(index, scene)`` for ``index`` in ``0..num-1``.

    ``size`` is one ``(height, width)`` for every scene, or a list cycled over the scenes.
    """
    if num < 2:
        raise RequestError(f"num={num}: write at least 2 scenes so both splits get one")
    sizes = [size] if isinstance(size[0], int) else list(size)
    for index in range(num):
        height, width = sizes[index % len(sizes)]
        yield index, make_scene(scene_seed(seed, index), height, width)
