"""Which transformer blocks to tap: timm's ``take_indices`` / DINOv2's ``n`` convention."""

from __future__ import annotations

from collections.abc import Sequence

from siglip2_dense.errors import RequestError


def resolve_layer_indices(layers: int | Sequence[int], num_blocks: int) -> list[int]:
    """Turn a layer request into non-negative block indices.

    Args:
        layers: an int ``n`` selects the last ``n`` blocks (in order); a sequence selects block
            indices, negative ones counting from the end (``-1`` is the last block).
        num_blocks: how many blocks the encoder has.

    Returns:
        Block indices in ``[0, num_blocks)``, in the order requested. Block ``i``'s output is
        transformers' ``hidden_states[i + 1]``.

    Raises:
        RequestError: ``n`` outside ``[1, num_blocks]``, an index outside
            ``[-num_blocks, num_blocks - 1]``, an empty list, or a repeated block.
    """
    if isinstance(layers, bool):
        raise RequestError(f"layers={layers!r}: expected an int n (last n blocks) or a list of block indices")
    if isinstance(layers, int):
        if not 1 <= layers <= num_blocks:
            raise RequestError(
                f"layers={layers}: the encoder has {num_blocks} blocks; an int n must be in [1, {num_blocks}]"
            )
        return list(range(num_blocks - layers, num_blocks))
    indices = list(layers)
    if not indices:
        raise RequestError("layers=[]: expected at least one block index")
    resolved = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int):
            raise RequestError(f"layers={indices!r}: block index {index!r} is not an int")
        if not -num_blocks <= index < num_blocks:
            raise RequestError(
                f"layers={indices!r}: block index {index} is out of range; the encoder has {num_blocks} "
                f"blocks, valid indices are {-num_blocks}..{num_blocks - 1}"
            )
        resolved.append(index % num_blocks)
    if len(set(resolved)) != len(resolved):
        raise RequestError(f"layers={indices!r}: block {resolved} repeats a block; list each block once")
    return resolved
