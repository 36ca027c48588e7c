"""Fast frozen probing: training a linear head for 10 epochs with the feature cache, against one
plain feature-extraction pass over the same data.

A base-size SigLIP2 NaFlex tower (random weights; the compute is the real checkpoint's) is written
to a temporary folder and loaded through the config as a user's checkpoint would be. The data are
32 synthetic 256x256 training scenes (one fixed 256x256 view each, 256 patches) and 2 validation
scenes, in the folder layout.

Figure: wall time of ``engine.train`` with ``train.feature_cache=true`` -- loading the backbone,
building the cache (one extraction pass + writing it) and 10 epochs of a linear head on it (batch
8, 40 steps, cross-entropy on logits upsampled to the 256x256 labels), checkpoints included, the
final validation left out (its duration is in the log) -- divided by the wall time of one
extraction pass over the same 32 views (``backbone(**backbone.preprocess(images))`` under
``inference_mode``, batch 8).
Target <= 1.5: with the cache, the epochs after the first cost little next to the backbone.

Run: ``python benchmarks/probe.py``
"""

from __future__ import annotations

import itertools
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
from backbone import base_naflex_backbone
from measure import Figure, interleaved_seconds, print_figures

ROOT = Path(__file__).resolve().parents[1]
NUM_TRAIN, BATCH, EPOCHS, SIZE = 32, 8, 10, 256


def write_checkpoint(directory: Path) -> Path:
    torch.manual_seed(0)
    backbone = base_naflex_backbone()
    backbone.vision_model.save_pretrained(directory)
    backbone.image_processor.save_pretrained(directory)
    return directory


def write_data(root: Path) -> Path:
    """``root/{train,val}/{images,masks}`` and ``root/class_names.txt`` (the folder layout)."""
    from siglip2_dense.data import write_synthetic

    write_synthetic("folder", root / "train", num=NUM_TRAIN, seed=0, size=(SIZE, SIZE))
    write_synthetic("folder", root / "val", num=2, seed=1, size=(SIZE, SIZE))
    shutil.copy(root / "train" / "class_names.txt", root / "class_names.txt")
    return root


def run() -> list[Figure]:
    from siglip2_dense.build import build_backbone, build_dataset, build_train_transform
    from siglip2_dense.config import load_config
    from siglip2_dense.data.order import SeededViews
    from siglip2_dense.training.engine import read_log, train

    work = Path(tempfile.mkdtemp(prefix="probe-benchmark-"))
    try:
        checkpoint = write_checkpoint(work / "checkpoint")
        data = write_data(work / "data")
        iterations = EPOCHS * NUM_TRAIN // BATCH
        overrides = [f"model.backbone={checkpoint}", "model.max_num_patches=256", "data.dataset=folder",
                     f"data.root={data}", "data.train_split=train", "data.val_split=val",
                     f"data.crop_size=[{SIZE},{SIZE}]", f"data.short_side={SIZE}", "data.scale_range=[1.0,1.0]",
                     "data.train_views=1", "head.args.num_classes=17", f"train.iterations={iterations}",
                     f"train.batch_size={BATCH}", "train.val_every=0", f"train.checkpoint_every={iterations}",
                     f"train.log_every={iterations}", "train.feature_cache=true", "eval.mode=whole", "train.device=cpu"]
        config = load_config(ROOT / "configs" / "synthetic_linear_tiny.yaml", overrides)
        runs = itertools.count()

        validation_seconds: list[float] = []

        def probe_with_cache() -> None:
            run_dir = work / f"run-{next(runs)}"  # a fresh output folder: the cache is built every time
            train(load_config(ROOT / "configs" / "synthetic_linear_tiny.yaml",
                              overrides + [f"train.output_dir={run_dir}"]))
            validation_seconds.append(sum(r.get("seconds", 0.0) for r in read_log(run_dir / "log.jsonl")))

        backbone = build_backbone(config, "cpu")
        views = SeededViews(build_dataset(config, "train"), build_train_transform(config), config.train.seed, views=1)
        images = [views[(k, 0)]["image"] for k in range(len(views))]

        def extraction_pass() -> None:
            with torch.inference_mode():
                for start in range(0, len(images), BATCH):
                    backbone(**backbone.preprocess(images[start : start + BATCH], max_num_patches=256))

        times = interleaved_seconds({"probe": probe_with_cache, "extract": extraction_pass}, repeats=2, warmup=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    validation = statistics.median(validation_seconds)
    training = times["probe"] - validation
    ratio = training / times["extract"]
    return [Figure(f"probe: {EPOCHS} epochs of a linear head with the feature cache / one extraction pass", ratio,
                   1.5, higher_is_better=False,
                   detail=f"probe {training:.1f} s (+ {validation:.1f} s final validation), "
                          f"extraction {times['extract']:.1f} s, "
                          f"{NUM_TRAIN} views of 256 patches, B/16 NaFlex")]


if __name__ == "__main__":
    print_figures("probe", run())
