"""The GPU path: images/s and model FLOP utilisation of SigLIP2 towers in bf16.

For the base and So400m NaFlex vision configurations at 256 and 1024 patches, with the
``eager``, ``sdpa`` and (where installed) ``flash_attention_2`` attention implementations,
measures images/s of ``Backbone.forward`` (random weights; the compute is the real
checkpoint's) and MFU = achieved FLOP/s / the card's dense bf16 peak. FLOPs are counted by
``torch.utils.flop_counter`` on the same forward. Target: MFU >= 0.40 for So400m at 1024
patches with SDPA.

4-bit rows (``sdpa+4bit``): the same tower saved as a checkpoint and loaded back through
``load_backbone(..., quantization_config=BitsAndBytesConfig(load_in_4bit=True))``, as the SigLIP2
model page shows; images/s, the GPU memory its weights take next to the bf16 tower's, and its effective
MFU (the bf16 tower's FLOPs over the 4-bit tower's time: the FLOP counter cannot see bitsandbytes' kernels). They need
bitsandbytes and accelerate; without them the rows are skipped and the reason is printed and saved.

Run on a GPU machine (about five minutes on an H100-class card)::

    python benchmarks/gpu.py [--out benchmarks/gpu_results.json]

Without a GPU it says so and measures nothing; ``--device cpu --tiny`` exercises the same
logic on a tiny configuration (what the tests run).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from siglip2_dense import Backbone

VISION_CONFIGS = {
    "base": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
    "so400m": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4),
}

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, FLOP/s.
BF16_PEAK_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
}


@dataclass
class GpuRow:
    model: str
    patches: int
    attention: str
    images_per_s: float
    mfu: float | None
    gflop_per_image: float
    weights_mib: float | None = None


def peak_bf16_flops(device_name: str) -> float | None:
    """The card's dense bf16 peak, matched on its marketing name; None when unknown."""
    for key in sorted(BF16_PEAK_FLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return BF16_PEAK_FLOPS[key]
    return None


def attention_implementations() -> list[str]:
    names = ["eager", "sdpa"]
    if importlib.util.find_spec("flash_attn") is not None:
        names.append("flash_attention_2")
    return names


def build_backbone(size: str, attention: str, patches: int, device: torch.device, dtype: torch.dtype) -> Backbone:
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    config = Siglip2VisionConfig(**VISION_CONFIGS[size], patch_size=16, num_patches=256)
    model = Siglip2VisionModel._from_config(config, attn_implementation=attention)
    model = model.to(device=device, dtype=dtype).eval()
    if model.config._attn_implementation != attention:
        raise RuntimeError(f"asked for {attention} attention, transformers chose {model.config._attn_implementation}")
    return Backbone(model, Siglip2ImageProcessor(patch_size=16, max_num_patches=patches))


def four_bit_unavailable() -> str | None:
    """Why 4-bit loading cannot run here (a missing package), or None."""
    missing = [name for name in ("bitsandbytes", "accelerate") if importlib.util.find_spec(name) is None]
    return f"4-bit rows skipped: {' and '.join(missing)} not installed" if missing else None


def build_4bit_backbone(size: str, patches: int, device: torch.device, directory: str) -> Backbone:
    """The tower of :func:`build_backbone`, saved to ``directory`` and loaded back in 4 bits (NF4 weights,
    bf16 compute) through the toolkit's loader, as a user's checkpoint would be."""
    from transformers import (
        BitsAndBytesConfig,
        Siglip2ImageProcessor,
        Siglip2VisionConfig,
        Siglip2VisionModel,
    )

    from siglip2_dense import load_backbone

    config = Siglip2VisionConfig(**VISION_CONFIGS[size], patch_size=16, num_patches=256)
    Siglip2VisionModel(config).save_pretrained(directory)
    Siglip2ImageProcessor(patch_size=16, max_num_patches=patches).save_pretrained(directory)
    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                      bnb_4bit_compute_dtype=torch.bfloat16)
    return load_backbone(directory, layers=1, dtype=torch.bfloat16, device=device,
                         attn_implementation="sdpa", quantization_config=quantization)


def weights_mib(module: torch.nn.Module) -> float:
    """Bytes of the module's parameters and buffers as stored (4-bit weights count as packed), in MiB."""
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def measure_row(size: str, attention: str, patches: int, batch: int, device: torch.device,
                dtype: torch.dtype, iterations: int, peak: float | None, model_flops: float | None = None) -> GpuRow:
    """One row. ``model_flops``: the bf16 tower's FLOPs for the batch, for rows whose kernels the FLOP
    counter cannot see (bitsandbytes' 4-bit matmuls): their MFU is then the effective one, the same
    model's FLOPs over the time it took, as for the CPU's int8 rows."""
    if attention == "sdpa+4bit":
        with tempfile.TemporaryDirectory(prefix="gpu-4bit-") as directory:  # the weights are in memory once loaded
            bb = build_4bit_backbone(size, patches, device, directory)
    else:
        bb = build_backbone(size, attention, patches, device, dtype)
    side = int(np.sqrt(patches)) * 16
    images = [np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8) for i in range(batch)]
    inputs = bb.preprocess(images, max_num_patches=patches)

    def forward() -> None:
        with torch.inference_mode():
            bb(**inputs)

    with FlopCounterMode(display=False) as counter:
        forward()
    flops = counter.get_total_flops() if model_flops is None else model_flops
    for _ in range(2):
        forward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iterations):
        forward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = (time.perf_counter() - start) / iterations
    return GpuRow(
        model=size, patches=patches, attention=attention, images_per_s=batch / elapsed,
        mfu=None if peak is None else flops / elapsed / peak, gflop_per_image=flops / batch / 1e9,
        weights_mib=weights_mib(bb),
    )


def run(device: torch.device, sizes: list[str], patch_counts: list[int], batch: int, iterations: int,
        dtype: torch.dtype, four_bit: bool = False) -> list[GpuRow]:
    """Every (size, patches, attention) row; with ``four_bit``, an ``sdpa+4bit`` row after each ``sdpa`` row."""
    peak = peak_bf16_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    attentions = attention_implementations() if device.type == "cuda" else ["eager", "sdpa"]
    if four_bit:
        attentions = attentions + ["sdpa+4bit"]
    rows = []
    for size in sizes:
        for patches in patch_counts:
            bf16_flops = None
            for attention in attentions:
                reference = bf16_flops if attention == "sdpa+4bit" else None
                rows.append(measure_row(size, attention, patches, batch, device, dtype, iterations, peak, reference))
                if attention == "sdpa":
                    bf16_flops = rows[-1].gflop_per_image * 1e9 * batch
                print(json.dumps(asdict(rows[-1])), flush=True)
    return rows


def markdown_table(rows: list[GpuRow], device_name: str) -> str:
    lines = [f"GPU: {device_name}", "", "| tower | patches | attention | images/s | MFU (bf16) | weights MiB |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        mfu = "n/a" if row.mfu is None else f"{100 * row.mfu:.1f}%"
        weights = "n/a" if row.weights_mib is None else f"{row.weights_mib:.1f}"
        lines.append(f"| {row.model} | {row.patches} | {row.attention} | {row.images_per_s:.1f} | {mfu} | {weights} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configuration, for testing the logic on a CPU")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", default="")
    parser.add_argument("--no-4bit", action="store_true", help="leave out the bitsandbytes 4-bit rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no GPU available: the GPU rows are skipped (run this script on a GPU machine)")
        return 0
    sizes = ["tiny"] if args.tiny else ["base", "so400m"]
    patch_counts = [16, 64] if args.tiny else [256, 1024]
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    skipped = "4-bit rows skipped: --no-4bit" if args.no_4bit else four_bit_unavailable()
    if skipped is None and device.type != "cuda":
        skipped = "4-bit rows skipped: bitsandbytes 4-bit layers run on a GPU"
    rows = run(device, sizes, patch_counts, args.batch, args.iterations, dtype, four_bit=skipped is None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    table = markdown_table(rows, name) + (f"\n\n{skipped}" if skipped else "")
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": name, "rows": [asdict(r) for r in rows], "table": table, "skipped": skipped}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
