"""Can the data loader keep up with the backbone? ADE20K train pipeline throughput vs backbone forward.

A synthetic ADE20K-format set of 64 images at ADE-like sizes (short side 427..683) is written to a
temporary folder and read through ``ADE20KDataset`` + the mmseg train pipeline at 512 (random rescale
0.5-2.0, cat-max crop, flip, photometric distortion, pad) by a ``torch.utils.data.DataLoader`` with 2
workers. The backbone side is a base-size SigLIP2 FixRes tower (hidden 768, 12 blocks, patch 16,
image size 512, random weights: the compute of the real checkpoint) in float32, forward only, under
``torch.no_grad``, batch 2, on 512x512 crops from that loader.

Figure: loader images/s divided by backbone images/s; target >= 3 (the loader is never what waits).
Each throughput is the median of 3 repeats (one loader epoch of 64 images; one batch-2 forward).

Run: ``python benchmarks/data.py [--device cuda]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from backbone import BASE
from measure import Figure, print_figures, seconds
from torch.utils.data import DataLoader

from siglip2_dense.backbone.siglip import Backbone
from siglip2_dense.data import ADE20KDataset, build_segmentation_train_transform, collate_padded
from siglip2_dense.data.write_formats import write_ade20k

NUM_IMAGES, CROP, BATCH, WORKERS, REPEATS = 64, 512, 2, 2, 3
ADE_LIKE_SIZES = [(512, 683), (683, 512), (512, 512), (427, 640), (480, 640), (512, 768), (640, 427)]


def base_backbone_at_512(device: str) -> Backbone:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    model = SiglipVisionModel(SiglipVisionConfig(**BASE, image_size=CROP)).eval().to(device, torch.float32)
    return Backbone(model, SiglipImageProcessor(size={"height": CROP, "width": CROP}))


def loader_images_per_second(root: Path) -> tuple[float, dict]:
    """Median images/s of whole epochs (workers kept alive between epochs); also one batch for the model."""
    transform = build_segmentation_train_transform(crop_size=(CROP, CROP), short_side=CROP)
    dataset = ADE20KDataset(root, "training", transform=transform)
    loader = DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=WORKERS, collate_fn=collate_padded,
        persistent_workers=True, drop_last=True,
    )  # fmt: skip
    first_batch = next(iter(loader))  # also starts the workers: not timed
    rates = []
    for _ in range(REPEATS):
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += batch["image"].shape[0]
        rates.append(count / (time.perf_counter() - start))
    return statistics.median(rates), first_batch


def backbone_images_per_second(batch: dict, device: str) -> float:
    backbone = base_backbone_at_512(device)
    crops = [image.permute(1, 2, 0).numpy() for image in batch["image"]]  # [512, 512, 3] uint8 each
    inputs = backbone.preprocess(crops)

    def forward() -> None:
        with torch.no_grad():
            backbone(**inputs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return BATCH / seconds(forward, repeats=REPEATS, warmup=1)


def run(device: str = "cpu") -> list[Figure]:
    with tempfile.TemporaryDirectory() as folder:
        # scenes 1, 5, 9, ... go to validation: write enough for NUM_IMAGES training images
        root = write_ade20k(folder, NUM_IMAGES * 4 // 3 + 1, seed=0, size=ADE_LIKE_SIZES)
        loader_rate, batch = loader_images_per_second(root)
    model_rate = backbone_images_per_second(batch, device)
    detail = (
        f"loader {loader_rate:.1f} img/s ({WORKERS} workers, ADE train pipeline at {CROP}); "
        f"backbone {model_rate:.2f} img/s (base, {CROP}x{CROP}, float32, batch {BATCH}, {device})"
    )
    return [Figure("data loader / backbone throughput", loader_rate / model_rate, 3.0, True, detail)]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="device of the backbone (cpu, cuda)")
    args = parser.parse_args()
    print_figures("data loading vs backbone", run(args.device))


if __name__ == "__main__":
    main()
