"""CPU speed options, measured before being adopted: ``torch.compile`` and channels-last.

- ``torch.compile`` (inductor) of the base NaFlex tower's encoder blocks against eager, 4 images
  at 256 patches (compile time excluded);
- channels-last memory format for the DPT head (the only head with spatial convolutions) against
  contiguous, on four base-width maps of a 32 x 32 grid, batch 2.

Each figure is a speed-up (eager time / option time); 1.05 is the bar for adopting an option, to be
cleared on an idle machine in repeated runs. compile measured 0.93-1.02x: not adopted. Channels-last
measured 1.08x and 1.09x (0.93x once on a machine loaded by six jobs): adopted, as ``DPTHead``'s
default ``channels_last=True``; the figure now compares ``channels_last=False`` with the default.
Seven idle runs in all: 1.02-1.12x, median 1.08x (one run alone can land under the bar).

Run: ``python benchmarks/cpu_options.py``
"""

from __future__ import annotations

import numpy as np
import torch
from backbone import base_naflex_backbone
from measure import Figure, interleaved_seconds, print_figures

from siglip2_dense.backbone.features import DenseFeatures
from siglip2_dense.heads import build_head

ADOPT_AT = 1.05


def compile_speedup() -> Figure:
    bb = base_naflex_backbone()
    images = [np.random.default_rng(i).integers(0, 256, (256, 256, 3), dtype=np.uint8) for i in range(4)]
    inputs = bb.preprocess(images)
    blocks = list(bb.vision_model.encoder.layers)
    compiled = [torch.compile(block, dynamic=False) for block in blocks]
    with torch.inference_mode():
        tokens = bb.vision_model.embeddings(inputs["pixel_values"], inputs["spatial_shapes"])

    def run_blocks(modules):
        def run() -> None:
            with torch.inference_mode():
                hidden = tokens
                for module in modules:
                    hidden = module(hidden, None)
        return run

    times = interleaved_seconds({"eager": run_blocks(blocks), "compiled": run_blocks(compiled)}, repeats=3)
    return Figure("torch.compile encoder blocks: eager time / compiled time", times["eager"] / times["compiled"],
                  ADOPT_AT, detail=f"eager {times['eager']:.2f} s, compiled {times['compiled']:.2f} s", kind="option")


def channels_last_speedup() -> Figure:
    """``DPTHead(channels_last=False)`` against the default ``channels_last=True`` on the same features."""
    torch.manual_seed(0)
    head = build_head("dpt", in_channels=[768] * 4, num_classes=150, channels_last=False).eval()
    head_last = build_head("dpt", in_channels=[768] * 4, num_classes=150).eval()
    head_last.load_state_dict(head.state_dict())
    batch, height, width = 2, 32, 32
    maps = [torch.randn(batch, 768, height, width) for _ in range(4)]
    mask = torch.ones(batch, height, width, dtype=torch.bool)
    features = DenseFeatures(maps=maps, mask=mask, grid_sizes=torch.tensor([[height, width]] * batch))

    def forward(module):
        def run() -> None:
            with torch.inference_mode():
                module(features)
        return run

    times = interleaved_seconds({"contiguous": forward(head), "channels_last": forward(head_last)}, repeats=3)
    return Figure("channels-last DPT head: contiguous time / channels-last time",
                  times["contiguous"] / times["channels_last"], ADOPT_AT,
                  detail=f"contiguous {times['contiguous']:.2f} s, channels-last {times['channels_last']:.2f} s "
                         "(DPTHead's default: 1.02-1.12x over seven idle runs, median 1.08x)",
                  kind="option")


def run() -> list[Figure]:
    return [compile_speedup(), channels_last_speedup()]


if __name__ == "__main__":
    print_figures("CPU options", run())
