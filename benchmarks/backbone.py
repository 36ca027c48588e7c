"""Backbone speed on a CPU: the toolkit's forward against transformers', and against the peak.

Base-size SigLIP2 towers with random weights (the compute is the real checkpoint's):
NaFlex (``Siglip2VisionModel``, 256 patches) and FixRes (``SiglipVisionModel`` at 256x256).

(a) ``bb(**inputs)`` images/s divided by a bare transformers forward on the same inputs (median of
    nine interleaved rounds: between idle runs the figures move by about 0.03);
    target >= 0.97 (the dense interface costs nothing).
(b) achieved FLOP/s of that forward (FLOPs counted by ``torch.utils.flop_counter``) divided by
    a float32 ``torch.mm`` peak (2048-square products) measured in the same run; target >= 0.85.

Two reported figures say where (b)'s ceiling is. Every ``nn.Linear`` call of one forward is
replayed alone as ``torch.addmm`` on random operands of the same shapes (98% of the forward's
FLOPs): their FLOP/s over the peak ("linear layers alone"), and the share of the forward's time
spent outside them ("outside the linear layers": GELU, layer norms, SDPA, the copies around
attention, residual adds, the MAP head). (b) is about (1 - outside share) times the linear
layers' rate. On the 2-core EPYC (two idle runs) the linear layers run at 1.00-1.04 of the
2048-square peak (their shapes suit the BLAS kernels as well), and the rest takes 17-25% of the
forward's time, so (b) lands at 0.77-0.89 between runs. What was tried to shrink the rest (base
FixRes tower, 4 images, 2 threads): q/k/v fused into one product with in-place residual adds
0.98x, the MLP run in row chunks that stay in cache 0.89x, inductor with weight freezing
(``torch.compile``, fused pointwise ops, prepacked weights) 1.05x, inductor without freezing
0.93-1.02x (``benchmarks/cpu_options.py``). The ceiling is transformers' own eager forward, which
the toolkit runs at parity.

Run: ``python benchmarks/backbone.py``
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from measure import Figure, interleaved_seconds, matmul_workload, print_figures
from torch.utils.flop_counter import FlopCounterMode

from siglip2_dense import Backbone

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


def linear_layer_workload(model: torch.nn.Module, run: Callable[[], object]) -> tuple[Callable[[], None], int]:
    """Every ``nn.Linear`` call of ``run()`` replayed as ``torch.addmm`` on random operands of its shapes.

    Returns:
        (fn, FLOPs per call of fn): ``fn`` runs the products once, in the order the forward ran them.
    """
    shapes: list[tuple[int, int, int]] = []

    def record(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        rows = args[0].numel() // args[0].shape[-1]
        shapes.append((rows, module.in_features, module.out_features))

    hooks = [m.register_forward_hook(record) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    operands = [(torch.randn(n), torch.randn(m, k), torch.randn(k, n)) for m, k, n in shapes]

    def fn() -> None:
        for bias, left, right in operands:
            torch.addmm(bias, left, right)

    return fn, sum(2 * m * k * n for m, k, n in shapes)


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
    linear_fn, linear_flops = linear_layer_workload(vm, bare)
    times = interleaved_seconds({"toolkit": toolkit, "bare": bare, "peak": peak_fn, "linear": linear_fn}, repeats=9)
    peak = peak_flops / times["peak"]
    flops = counted_flops(bare)
    achieved = flops / times["bare"]
    linear_rate = linear_flops / times["linear"]
    return [
        Figure(f"backbone {name}: toolkit / transformers images/s", times["bare"] / times["toolkit"], 0.97,
               detail=f"toolkit {batch / times['toolkit']:.2f} img/s, transformers {batch / times['bare']:.2f} img/s"),
        Figure(f"backbone {name}: achieved FLOP/s / fp32 matmul peak", achieved / peak, 0.85,
               detail=f"{achieved / 1e9:.1f} GFLOP/s of {peak / 1e9:.1f}, {flops / batch / 1e9:.1f} GFLOP/img"),
        Figure(f"backbone {name}: linear layers alone, FLOP/s / fp32 matmul peak", linear_rate / peak, 0.0,
               detail=f"{linear_rate / 1e9:.1f} GFLOP/s, {linear_flops / flops:.0%} of the forward's FLOPs",
               kind="report"),
        Figure(f"backbone {name}: share of the forward's time outside the linear layers",
               1.0 - times["linear"] / times["bare"], 0.0,
               detail=f"forward {times['bare']:.3f} s, its linear layers alone {times['linear']:.3f} s", kind="report"),
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
