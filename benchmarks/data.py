"""Can the data loader keep up with the backbone? Train pipeline throughput vs backbone forward, per data set.

For each data set format (ADE20K, Pascal VOC, Pascal Context, COCO-Stuff, COCO-Object from the
converted label maps and from the instances JSON through pycocotools, Cityscapes) a synthetic set of
64 training images at ADE-like sizes (short side 427..683) is written to a temporary folder in that
format and read through its data set class + the mmseg train pipeline at 512 (random rescale
0.5-2.0, cat-max crop, flip, photometric distortion, pad) by a ``torch.utils.data.DataLoader`` with 2
workers. The backbone side is a base-size SigLIP2 FixRes tower (hidden 768, 12 blocks, patch 16,
image size 512, random weights: the compute of the real checkpoint) in float32, forward only, under
``torch.no_grad``, batch 2, on 512x512 crops from that loader.

Figure (one row per data set): loader images/s divided by backbone images/s; target >= 3 (the loader
is never what waits).
Each throughput is the median of 3 repeats (one loader epoch of 64 images; one batch-2 forward).

Run: ``python benchmarks/data.py [--device cuda] [--only voc,cityscapes]``
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

from siglip2_dense import Backbone
from siglip2_dense.data import (
    ADE20KDataset,
    CityscapesDataset,
    COCOObjectDataset,
    COCOObjectInstancesDataset,
    COCOStuffDataset,
    PascalContextDataset,
    PascalVOCDataset,
    build_segmentation_train_transform,
    collate_padded,
)
from siglip2_dense.data.write_formats import write_synthetic

NUM_IMAGES, CROP, BATCH, WORKERS, REPEATS = 64, 512, 2, 2, 3
ADE_LIKE_SIZES = [(512, 683), (683, 512), (512, 512), (427, 640), (480, 640), (512, 768), (640, 427)]


def base_backbone_at_512(device: str) -> Backbone:
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    model = SiglipVisionModel(SiglipVisionConfig(**BASE, image_size=CROP)).eval().to(device, torch.float32)
    return Backbone(model, SiglipImageProcessor(size={"height": CROP, "width": CROP}))


# row name -> (make_synthetic format, the training split of the written root with a transform)
DATASETS = {
    "ade20k": ("ade20k", lambda root, t: ADE20KDataset(root, "training", transform=t)),
    "voc": ("voc", lambda root, t: PascalVOCDataset(root, "train", transform=t)),
    "context": ("context", lambda root, t: PascalContextDataset(root, "train", transform=t)),
    "cocostuff": ("cocostuff", lambda root, t: COCOStuffDataset(root, "train2017", transform=t)),
    "cocoobject": ("cocoobject", lambda root, t: COCOObjectDataset(root, "train2017", transform=t)),
    "cocoobject-instances": ("cocoobject", lambda root, t: COCOObjectInstancesDataset(
        root / "images" / "train2017", root / "annotations" / "instances_train2017.json", transform=t)),
    "cityscapes": ("cityscapes", lambda root, t: CityscapesDataset(root, "train", transform=t)),
}  # fmt: skip


def loader_images_per_second(name: str, root: Path) -> tuple[float, dict]:
    """Median images/s of whole epochs (workers kept alive between epochs); also one batch for the model."""
    transform = build_segmentation_train_transform(crop_size=(CROP, CROP), short_side=CROP)
    dataset = DATASETS[name][1](root, transform)
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


def run(device: str = "cpu", only: tuple[str, ...] = tuple(DATASETS)) -> list[Figure]:
    loader_rates, batch = {}, None
    with tempfile.TemporaryDirectory() as folder:
        for name in only:
            # scenes 1, 5, 9, ... go to validation: write enough for NUM_IMAGES training images
            root = write_synthetic(DATASETS[name][0], Path(folder) / name, NUM_IMAGES * 4 // 3 + 1, 0, ADE_LIKE_SIZES)
            loader_rates[name], batch = loader_images_per_second(name, root)
    model_rate = backbone_images_per_second(batch, device)
    figures = []
    for name, loader_rate in loader_rates.items():
        detail = (
            f"loader {loader_rate:.1f} img/s ({WORKERS} workers, {name} files, train pipeline at {CROP}); "
            f"backbone {model_rate:.2f} img/s (base, {CROP}x{CROP}, float32, batch {BATCH}, {device})"
        )
        title = "data loader / backbone throughput" + ("" if name == "ade20k" else f" ({name})")
        figures.append(Figure(title, loader_rate / model_rate, 3.0, True, detail))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="device of the backbone (cpu, cuda)")
    parser.add_argument("--only", default=",".join(DATASETS), help=f"comma-separated rows of: {', '.join(DATASETS)}")
    args = parser.parse_args()
    only = tuple(name.strip() for name in args.only.split(",") if name.strip())
    unknown = [name for name in only if name not in DATASETS]
    if unknown:
        parser.error(f"unknown rows {unknown}; valid: {', '.join(DATASETS)}")
    print_figures("data loading vs backbone", run(args.device, only))


if __name__ == "__main__":
    main()
