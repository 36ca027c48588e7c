"""``compile=True``: the tower's encoder blocks through ``torch.compile`` (inductor) for inference.

Each block is compiled on its own with ``dynamic=False``, so inductor specialises on the sequence shape
and keeps one compiled graph per shape it meets (NaFlex batches grouped by patch budget give few shapes;
``torch._dynamo.config.cache_size_limit`` bounds them, past it a block falls back to eager). The
Backbone's own forward -- embeddings, taps, masks, MAP head -- stays eager, so every tap keeps its
meaning. Inductor's weight freezing (``torch._inductor.config.freezing``) is a process-wide switch that
also changes every other compiled model, so it is not turned on here.

Measured on the 2-core AVX2 machine (``benchmarks/cpu_options.py``): 1.0-1.02x over eager for the
base tower in float32 -- the linear layers already run at the matrix-product peak; on a GPU
(bf16) fusing the element-wise work around them is where compile pays.
"""

from __future__ import annotations

from torch import nn

from siglip2_dense.errors import RequestError


def compile_blocks(blocks: nn.ModuleList, compile: bool) -> nn.ModuleList:
    """Compile every block of ``blocks`` in place (``nn.Module.compile``); ``compile=False`` leaves them.

    Returns ``blocks``. Compilation happens at the first call of each input shape.
    """
    if not isinstance(compile, bool):
        raise RequestError(f"compile={compile!r}; expected True or False")
    if compile:
        for block in blocks:
            block.compile(dynamic=False)
    return blocks
