"""Backbone speed on a CPU: the toolkit's forward against transformers', and against the peak.

Base-size SigLIP2 towers with random weights (the compute is the real checkpoint's):
NaFlex (``Siglip2VisionModel``, 256 patches) and FixRes (``SiglipVisionModel`` at 256x256).

(a) ``bb(**inputs)`` images/s divided by a bare transformers forward on the same inputs (median of
    nine interleaved rounds: between idle runs the figures move by about 0.03);
    target >= 0.97 (the dense interface costs nothing).
(b) achieved FLOP/s of that forward (FLOPs counted by ``torch.utils.flop_counter``) divided by
    a float32 ``torch.mm`` peak measured in the same run; target >= 0.85. The ceiling is set by
    transformers' own forward: torch.profiler on the FixRes tower (4 images) gives matrix products
    (``addmm``) 79% of the CPU time, SDPA 6%, GELU 5.5%, copies 4.4%, the MAP head's ``bmm`` 2.6%,
    layer norms and adds the rest; both towers take the same time when timed alone.

Run: ``python benchmarks/backbone.py``
"""

from __future__ import annotations

import numpy as np
import torch
from measure import Figure, interleaved_seconds, matmul_workload, print_figures
from torch.utils.flop_counter import FlopCounterMode

from siglip2_dense.backbone import Backbone

BASE = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, patch_size=16)


def base_naflex_backbone() -> Backbone:
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    model = Siglip2VisionModel(Siglip2VisionConfig(**BASE, num_patches=256)).eval()
    return Backbone(model, Siglip2ImageProcessor(patch_size=16, max_num_patches=256))


def base_fixres_backbone() -> Backbone:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    model = SiglipVisionModel(SiglipVisionConfig(**BASE, image_size=256)).eval()
    return Backbone(model, SiglipImageProcessor(size={"height": 256, "width": 256}))


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def measure(name: str, bb: Backbone, inputs: dict[str, torch.Tensor], bare_kwargs: dict) -> list[Figure]:
    batch = inputs["pixel_values"].shape[0]
    vm = bb.vision_model

    def toolkit() -> None:
        with torch.inference_mode():
            bb(**inputs)

    def bare() -> None:
        with torch.inference_mode():
            vm(**bare_kwargs)

    peak_fn, peak_flops = matmul_workload()
    times = interleaved_seconds({"toolkit": toolkit, "bare": bare, "peak": peak_fn}, repeats=9)
    peak = peak_flops / times["peak"]
    flops = counted_flops(bare)
    achieved = flops / times["bare"]
    return [
        Figure(f"backbone {name}: toolkit / transformers images/s", times["bare"] / times["toolkit"], 0.97,
               detail=f"toolkit {batch / times['toolkit']:.2f} img/s, transformers {batch / times['bare']:.2f} img/s"),
        Figure(f"backbone {name}: achieved FLOP/s / fp32 matmul peak", achieved / peak, 0.85,
               detail=f"{achieved / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f}, {flops / batch / 1e9:.1f} GFLOP/img"),
    ]


def run() -> list[Figure]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(4)]
    figures = []
    naflex = base_naflex_backbone()
    inputs = naflex.preprocess(images)
    figures += measure("NaFlex B/16 256 patches", naflex, inputs, dict(inputs))
    del naflex
    fixres = base_fixres_backbone()
    inputs = fixres.preprocess(images)
    figures += measure("FixRes B/16 256px", fixres, inputs, {"pixel_values": inputs["pixel_values"]})
    return figures


if __name__ == "__main__":
    print_figures("backbone", run())
