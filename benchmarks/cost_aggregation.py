"""CAT-Seg's cost aggregation head (``CostAggregationHead``) per image, against the backbone's forward.

On what: a base-size SigLIP2 NaFlex vision tower with random weights (width 768, 12 blocks, 12 heads,
MLP 3072, patch 16) written to a temporary folder and loaded through
``load_backbone(path, layers=[3, 7, 11], norm=False)`` (CAT-Seg's ViT-B/16 guidance blocks 3 and 7 and
the last block), the head built with its defaults (CAT-Seg's: hidden 128, 2 layers, 4 heads, pooling 2,
window 12, class_chunk 64) and bound to the tower. One random 384 x 384 image at ``--patches`` (default
256: a 16 x 16 grid, the tower's own budget; ``--patches 576`` gives CAT-Seg's 24 x 24 grid of a 384 px
input at patch 16: 2.25x the cells). Random text embeddings ``[T, 1, 768]`` (one template), float32,
``torch.inference_mode``, 1 thread by default (``--threads 2`` for both cores): on the shared 2-core
machine, with another job busy, a 2-thread forward of the base tower took 1.78 s against 0.33 s with 1
thread (OpenMP's hand-offs wait on a core the other job holds; idle, 2 threads take 0.23 s), so 2-thread
figures there measure the neighbour more than the head.

Rows:
- head / backbone time (each a median of 3 after one warm-up, all measured in alternation) at 150 and
  847 classes (ADE-150, ADE-847), each with the default ``pad_len=256`` (above 256 classes each image
  keeps its 256 classes of highest cost, as CAT-Seg; the rest get logit -100) and with ``pad_len=0``
  (every class aggregated: the cost without the cap). Backbone: ``backbone(**inputs)`` (preprocessing
  excluded). Reported, no target.
- the head's transient peak memory with ``pad_len=0`` at 50, 150, 300 and 847 classes, one call each, all in
  one fresh subprocess (resident size sampled every 0.5 ms, large tensors mmapped, as ``memory.py``):
  memory(847) / memory(150), target <= 847 / 150 x 1.1 (the growth at most linear: the cost volume is
  ``[T, 128, H, W]`` per image and the Swin blocks and the decoder run ``class_chunk`` classes at a time).

The figures come from a shared 2-core machine (other jobs running): the ratios move between runs.
There (1 thread, 16 x 16 grid) the head took 8.7x the backbone at 150 classes (either pad_len), 15x at
847 with the cap and 51x without it. Where the head's time goes at 150 classes: the Swin blocks 44%
(window 12 on a 16 x 16 grid pads each window set to 24 x 24 for attention; copies of the window
partition), the decoder 44% (its second step at 4x the grid, 3 x 3 convolutions and the masked GroupNorm's
element-wise passes), class aggregation 9%. Memory: about 175 MiB already at 50 classes, mostly the
decoder's last step on one chunk (``[class_chunk, 64, 4H, 4W]`` maps and GroupNorm temporaries), then
about 0.5 MiB per class (4 of one class's ``[128, H, W]`` cost slices: the aggregated cost, the Swin
outputs and their concatenation, class aggregation's temporaries), so the ratio sits under linear.

Run: ``python benchmarks/cost_aggregation.py [--patches 576] [--threads 2] [--tiny]`` (about 3 minutes on
the shared 2-core machine; ``--tiny``: a tiny tower and head, a few seconds, for the smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from backbone import BASE
from measure import Figure, interleaved_seconds, print_figures, transient_peak

MIB = 2**20


@dataclass(frozen=True)
class Setup:
    """The sizes of one run: the tower, its tapped blocks, the head's options, the class counts."""

    vision: dict
    layers: list[int]
    head: dict = field(default_factory=dict)
    timed_classes: tuple[int, int] = (150, 847)
    memory_classes: tuple[int, ...] = (50, 150, 300, 847)
    pad_len: int = 256
    image_size: int = 384
    fresh_process: bool = True  # memory points in a subprocess each (False: in this process, for tests)


FULL = Setup(vision=dict(BASE, num_patches=256), layers=[3, 7, 11])
TINY = Setup(
    vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=2, patch_size=16,
                num_patches=16),
    layers=[0, 1, 2],
    head=dict(hidden_dim=32, text_guidance_dim=16, appearance_guidance_dim=16, decoder_dims=(32, 16),
              decoder_guidance_dims=(16, 16), decoder_guidance_proj_dims=(16, 16), window_size=4, class_chunk=4),
    timed_classes=(6, 20), memory_classes=(3, 6, 12, 20), pad_len=8, image_size=64, fresh_process=False,
)


def write_checkpoint(folder: Path, setup: Setup) -> None:
    """A random-weight SigLIP2 NaFlex vision tower (with its MAP head) and its processor, as a user's."""
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    Siglip2VisionModel(Siglip2VisionConfig(**setup.vision, num_channels=3)).eval().save_pretrained(folder)
    Siglip2ImageProcessor(patch_size=16, max_num_patches=setup.vision["num_patches"]).save_pretrained(folder)


def load(folder: Path, setup: Setup, patches: int, pad_lens: tuple[int, ...]):
    """(backbone, {pad_len: bound head in eval mode}, inputs of the one image)."""
    import siglip2_dense as sd
    from siglip2_dense.heads import build_head

    backbone = sd.load_backbone(str(folder), layers=setup.layers, norm=False)
    heads = {}
    for pad_len in pad_lens:
        torch.manual_seed(0)
        head = build_head("cost_aggregation", in_channels=backbone.out_channels, num_classes=171,
                          labels=[f"class {i}" for i in range(171)], templates="single", pad_len=pad_len,
                          **setup.head)
        head.bind_backbone(backbone)
        heads[pad_len] = head.eval()
    image = np.random.default_rng(0).integers(0, 256, (setup.image_size, setup.image_size, 3), dtype=np.uint8)
    return backbone, heads, backbone.preprocess([image], max_num_patches=patches)


def text_of(classes: int, dim: int) -> torch.Tensor:
    return torch.randn(classes, 1, dim, generator=torch.Generator().manual_seed(classes))


def head_memory(folder: Path, setup: Setup, patches: int, threads: int) -> dict[int, int]:
    """The head's transient peaks (bytes) with ``pad_len=0`` at each of ``setup.memory_classes``, loaded from
    ``folder``."""
    torch.set_num_threads(threads)
    backbone, heads, inputs = load(folder, setup, patches, (0,))
    return loaded_head_memory(backbone, heads[0], inputs, setup.memory_classes)


def loaded_head_memory(backbone, head, inputs: dict, class_counts: tuple[int, ...]) -> dict[int, int]:
    """{classes: transient peak (bytes) of one ``head`` call}, the features computed first, the counts in
    ascending order (each call's tensors are freed, and returned to the system, before the next)."""
    with torch.inference_mode():
        features = backbone(**inputs)
        head(features, text_of(2, head.embed_dim))  # first calls set up kernels once: not the classes' cost
        peaks = {}
        for classes in sorted(class_counts):
            text = text_of(classes, head.embed_dim)
            before, peak = transient_peak(lambda text=text: head(features, text))
            peaks[classes] = peak - before
        return peaks


def memory_curve(folder: Path, setup: Setup, patches: int, threads: int, tiny: bool, loaded) -> dict[int, int]:
    """The memory points: in one fresh subprocess (its imports and the loading done before any point), or
    with ``loaded`` (backbone, head, inputs) in this process where the setup says so."""
    if not setup.fresh_process:
        return loaded_head_memory(*loaded, setup.memory_classes)
    # a fixed mmap threshold: tensors over 64 KiB get their own mapping, returned on free, so the resident
    # size follows the live tensors rather than glibc's heap
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-curve", "--folder", str(folder),
               "--patches", str(patches), "--threads", str(threads)] + (["--tiny"] if tiny else [])
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return {int(c): m for c, m in json.loads(out.stdout.strip().splitlines()[-1]).items()}


# --- the benchmark --------------------------------------------------------------------------------------
def run(patches: int | None = None, tiny: bool = False, threads: int = 1) -> list[Figure]:
    """The rows (module docstring); ``patches`` None: the tower's own budget (256; tiny: 16)."""
    setup = TINY if tiny else FULL
    patches = patches or setup.vision["num_patches"]
    torch.set_num_threads(threads)
    few, many = setup.timed_classes
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "siglip2-naflex-random"
        write_checkpoint(folder, setup)
        backbone, heads, inputs = load(folder, setup, patches, (setup.pad_len, 0))
        grid = tuple(inputs["spatial_shapes"][0].tolist())
        dim = heads[0].embed_dim
        with torch.inference_mode():
            features = backbone(**inputs)

        def timed_head(head, text):
            def fn():
                with torch.inference_mode():
                    return head(features, text)
            return fn

        def timed_backbone():
            with torch.inference_mode():
                return backbone(**inputs)

        fns = {"backbone": timed_backbone}
        for classes in (few, many):
            for pad_len in (setup.pad_len, 0):
                fns[f"{classes}/{pad_len}"] = timed_head(heads[pad_len], text_of(classes, dim))
        start = time.perf_counter()
        times = interleaved_seconds(fns, repeats=3, warmup=1)
        print(f"timing took {time.perf_counter() - start:.0f} s")

        start = time.perf_counter()
        memory = memory_curve(folder, setup, patches, threads, tiny, (backbone, heads[0], inputs))
        print(f"memory points took {time.perf_counter() - start:.0f} s")

    t_backbone = times["backbone"]
    print(f"image {setup.image_size}x{setup.image_size}, {patches} patches -> grid {grid[0]}x{grid[1]}; logits at "
          f"{4 * grid[0]}x{4 * grid[1]}; float32, {threads} thread(s); shared machine: other jobs were running")
    print(f"{'':28}{'seconds':>10}{'/ backbone':>12}")
    print(f"{'backbone forward':28}{t_backbone:10.3f}{1.0:12.2f}")
    figures = []
    for classes in (few, many):
        for pad_len in (setup.pad_len, 0):
            t = times[f"{classes}/{pad_len}"]
            label = f"head, {classes} classes, pad_len {pad_len}"
            print(f"{label:28}{t:10.3f}{t / t_backbone:12.2f}")
            if pad_len == 0:
                what = f"all {classes} classes aggregated"
            elif pad_len < classes:
                what = f"each image's top {pad_len} of {classes} classes aggregated"
            else:
                what = f"all {classes} classes, class attention padded to {pad_len}"
            figures.append(Figure(f"head / backbone time, {classes} classes, pad_len {pad_len}", t / t_backbone, 0.0,
                                  kind="report", detail=f"head {t:.2f} s, backbone {t_backbone:.2f} s; {what}; "
                                                        f"grid {grid[0]}x{grid[1]}, {threads} thread(s), shared CPU"))

    print(f"{'classes (pad_len 0)':28}{'head peak MiB':>14}{'MiB / class':>12}")
    for classes, used in memory.items():
        print(f"{classes:<28}{used / MIB:14.1f}{used / MIB / classes:12.3f}")
    low, high = setup.memory_classes[0], setup.memory_classes[-1]
    slope = (memory[high] - memory[low]) / (high - low)
    cost_slice = 128 * grid[0] * grid[1] * 4  # one class's cost volume [hidden_dim, H, W] float32
    ratio = memory[many] / max(memory[few], 1)  # a tiny run may add nothing measurable
    linear = many / few
    figures.append(Figure(f"head peak memory {many} / {few} classes (pad_len 0); linear = {linear:.2f}", ratio,
                          round(linear * 1.1, 2), higher_is_better=False,
                          detail=f"{memory[few] / MIB:.0f} vs {memory[many] / MIB:.0f} MiB; slope "
                                 f"{slope / MIB:.2f} MiB per class ({slope / cost_slice:.1f}x one class's "
                                 f"[128, {grid[0]}, {grid[1]}] cost slice); points "
                                 + ", ".join(f"{c}: {m / MIB:.0f}" for c, m in memory.items())))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=None,
                        help="max_num_patches of the image (default 256: a 16x16 grid; 576: 24x24)")
    parser.add_argument("--tiny", action="store_true", help="a tiny tower and head (seconds; for the smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (module docstring: why 1)")
    parser.add_argument("--memory-curve", action="store_true", help=argparse.SUPPRESS)  # the subprocess's part
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_curve:
        setup = TINY if args.tiny else FULL
        print(json.dumps(head_memory(Path(args.folder), setup, args.patches or setup.vision["num_patches"],
                                     args.threads)))
    else:
        print_figures("CAT-Seg cost aggregation head, base NaFlex, CPU (shared machine)",
                      run(patches=args.patches, tiny=args.tiny, threads=args.threads))
