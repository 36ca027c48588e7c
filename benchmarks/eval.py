"""Evaluation speed and memory: what the evaluation loop adds to the model, and whether it grows with the data.

(a) Sliding-window evaluation throughput / a bare forward over the same windows; target >= 0.95.
    Model: a base-size SigLIP2 NaFlex tower (768 wide, all 12 blocks, random weights; fewer blocks
    would understate the real model's share) + a 150-class linear head, the ADE20K protocol of
    ``configs/ade20k_linear_siglip2-b16-naflex.yaml`` (short side 512, windows 512 / stride 341,
    1024 patches per window). One ADE20K-sized image (480x640, resized to 512x683: two windows).
    "eval" is :func:`siglip2_dense.evaluation.loop.evaluate_images` with training's per-image
    predictor: preprocessing of every window, the forward, upsampling and accumulation of the
    150-class logits, the resize to the 480x640 label map, argmax and the evaluator update.
    "bare" is ``model(**inputs)`` on the same windows, preprocessed beforehand.
    Where the rest went (one loaded run, 1 thread, before / after): the 150-class pixel work --
    each window's logits resized to its 512x512 pixels, summed on the 512x683 canvas, divided by the
    window count, resized to 480x640 -- took 2.4 s per image against a forward of 6-12 s (0.85-0.93).
    All of it is linear and separable, so :mod:`siglip2_dense.evaluation.slide_labels` now composes it
    into one ``[480, 32]`` row matrix and one ``[640, 32]`` column matrix per window and runs two
    matrix products per row of windows: 0.09-0.21 s, then the arg-max over classes (0.11-0.16 s,
    ``max`` with indices, the largest remaining part), preprocessing (0.02 s) and the metric update
    (0.02 s). Scores equal the step-by-step arithmetic within 1e-5 (``tests/evaluation/test_slide_labels.py``).
    One torch thread:
    on a shared 2-core machine two threads make every parallel operation wait for descheduled
    threads, and the figure would measure the scheduler rather than the evaluation.
(b) Peak resident memory (``ru_maxrss`` / ``VmHWM`` of the process itself) of ``tools/eval.py`` (slide protocol, pictures on) on 200
    images / on 20 images, each in a fresh process; target <= 1.10 (memory does not grow with the
    data set). A tiny random NaFlex checkpoint and 64x64 synthetic ADE20K-format images.

Run: ``python benchmarks/eval.py`` (about 3 minutes on 2 shared CPU cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from backbone import BASE
from measure import Figure, interleaved_seconds, print_figures

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, patch_size=4)
ADE_CONFIG = ROOT / "configs" / "ade20k_linear_siglip2-b16-naflex.yaml"
TINY_CONFIG = ROOT / "configs" / "synthetic_linear_tiny.yaml"
LABEL_SIZE = (480, 640)
SMALL, LARGE = 20, 200


def base_model():
    """A base NaFlex tower (random weights) and a 150-class linear head, in eval mode."""
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    from siglip2_dense.backbone.siglip import Backbone
    from siglip2_dense.heads import build_head
    from siglip2_dense.model import DenseModel

    torch.manual_seed(0)
    tower = Siglip2VisionModel(Siglip2VisionConfig(**BASE, num_patches=256)).eval()
    backbone = Backbone(tower, Siglip2ImageProcessor(patch_size=16, max_num_patches=1024))
    return DenseModel(backbone, build_head("linear", in_channels=backbone.out_channels, num_classes=150)).eval()


def throughput_figure() -> Figure:
    from siglip2_dense.config import load_config
    from siglip2_dense.data import build_segmentation_eval_transform
    from siglip2_dense.evaluation import SegmentationEvaluator
    from siglip2_dense.evaluation.loop import evaluate_images
    from siglip2_dense.evaluation.run import dense_model_predictor
    from siglip2_dense.inference import slide_window_boxes

    config = load_config(ADE_CONFIG, ["model.backbone=random-base", "data.root=unused"])
    model = base_model()
    rng = np.random.default_rng(0)
    raw = {"image": rng.integers(0, 256, (*LABEL_SIZE, 3), dtype=np.uint8),
           "mask": rng.integers(0, 150, LABEL_SIZE, dtype=np.uint8), "path": "ADE_val_00000001.jpg"}
    items = [build_segmentation_eval_transform(config.data.short_side, 4 * config.data.short_side)(raw)]
    image = items[0]["image"]
    boxes = slide_window_boxes(*image.shape[:2], config.eval.crop_size, config.eval.stride)
    windows = [model.backbone.preprocess([np.ascontiguousarray(image[y1:y2, x1:x2])],
                                         max_num_patches=config.model.max_num_patches) for y1, y2, x1, x2 in boxes]
    predict = dense_model_predictor(model, config, torch.device("cpu"))
    evaluator = SegmentationEvaluator(num_classes=150)

    def evaluation() -> None:
        evaluate_images(predict, items, evaluator, "segmentation", torch.device("cpu"))

    def bare() -> None:
        with torch.inference_mode():
            for inputs in windows:
                model(**inputs)

    times = interleaved_seconds({"eval": evaluation, "bare": bare}, repeats=3, warmup=1)
    return Figure(
        "eval: sliding-window evaluation images/s / bare backbone+head forward on its windows",
        times["bare"] / times["eval"], 0.95,
        detail=f"base NaFlex 12 blocks + linear-150, {image.shape[0]}x{image.shape[1]} image, {len(windows)} "
               f"windows of 1024 patches: eval {times['eval']:.2f} s/img, bare {times['bare']:.2f} s/img",
    )


WRITE_TINY_MODEL = r"""
import torch
from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel
from siglip2_dense import load_backbone
from siglip2_dense.heads import build_head
from siglip2_dense import DenseModel
torch.manual_seed(0)
Siglip2VisionModel(Siglip2VisionConfig(**{tiny!r}, num_patches=64)).save_pretrained({tower!r})
Siglip2ImageProcessor(patch_size=4, max_num_patches=64).save_pretrained({tower!r})
backbone = load_backbone({tower!r})
DenseModel(backbone, build_head("linear", in_channels=backbone.out_channels, num_classes=17)).save_pretrained({model!r})
"""

# VmHWM is the peak resident set of this process image. ru_maxrss would do on its own, but Linux
# carries it over fork + exec, so a child started by this (large) benchmark process would report
# at least the parent's size; the smaller of the two is this process's own peak.
MEASURE_EVAL = r"""
import json, resource, runpy
tool = runpy.run_path({tool!r})
code = tool["main"]({arguments!r})
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"code": code, "peak_kib": min(hwm, maxrss)}}))
"""


def peak_memory_kib(model: Path, data_root: Path, out: Path) -> int:
    """Peak resident memory of a fresh process running tools/eval.py on ``data_root``'s validation split."""
    arguments = ["--config", str(TINY_CONFIG), "--checkpoint", str(model), "--out", str(out / "metrics"),
                 "--show-dir", str(out / "pictures"), "--no-progress", f"data.root={data_root}"]
    script = MEASURE_EVAL.format(tool=str(ROOT / "tools" / "eval.py"), arguments=arguments)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    if result["code"] != 0:
        raise RuntimeError(f"tools/eval.py failed: {completed.stderr[-2000:]}")
    return int(result["peak_kib"])


def memory_figure() -> Figure:
    from siglip2_dense.data import write_synthetic

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        subprocess.run([sys.executable, "-c", WRITE_TINY_MODEL.format(tiny=TINY, tower=str(folder / "tower"),
                                                                      model=str(folder / "model"))],
                       check=True, capture_output=True)
        peaks = {}
        for count in (SMALL, LARGE):  # scenes with index % 4 == 1 are the validation split
            root = write_synthetic("ade20k", folder / f"data{count}", num=4 * count, seed=0, size=(64, 64))
            peaks[count] = peak_memory_kib(folder / "model", root, folder / f"run{count}")
    return Figure(
        f"eval: peak resident memory on {LARGE} images / on {SMALL} images (fresh processes)",
        peaks[LARGE] / peaks[SMALL], 1.10, higher_is_better=False,
        detail=f"{peaks[LARGE] / 1024:.0f} MiB vs {peaks[SMALL] / 1024:.0f} MiB (tiny NaFlex, 64x64 images, slide, "
               "pictures on)",
    )


def run() -> list[Figure]:
    torch.set_num_threads(1)
    memory = memory_figure()  # first, while this process is small
    return [throughput_figure(), memory]


if __name__ == "__main__":
    print_figures("eval", run())
