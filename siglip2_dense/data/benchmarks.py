"""The eight training-free open-vocabulary segmentation benchmarks, as the SCLIP lineage runs them, and two more.

One table, :data:`BENCHMARKS`. Every number comes from the SCLIP repository (github.com/wangf3014/SCLIP at
b56bd30): ``configs/cfg_<name>.py`` for the data set, split, test-time resize and background threshold
(``prob_thd``), ``clip_segmentor.py`` for the sliding window (``slide_crop=224, slide_stride=112``, the
defaults for ViT-B/16 CLIP). NACLIP and ProxyCLIP reuse the same tables with these differences, noted
per row: NACLIP resizes COCO-Stuff to 336 and turns the window off for VOC (``slide_crop=0``);
ProxyCLIP resizes ADE20K and Cityscapes to 448 and COCO-Stuff to 336 and sets its own thresholds.

Test-time resize ``Resize(scale=(2048, s), keep_ratio=True)`` is mmcv's rescale to fit inside 2048 x s:
the short side becomes ``s`` unless the long side would pass 2048 (:data:`LONG_SIDE`, :func:`benchmark_resize`).

Two rows beyond the eight, the large vocabularies of CAT-Seg's zero-shot table (``ade847``, ``context459``;
data in the layouts of CAT-Seg's preparation scripts): the SCLIP lineage has no config for them, so they take
their parent data set's settings (ADE20K's and Pascal Context's: short side 336, window 224 / 112, no
threshold) and compare with the rest of the table; each row's comment says how CAT-Seg itself tests.

With-background benchmarks (VOC21, Context60, COCO-Object) have background as class 0 of both the
labels and the class-name file; a pixel whose highest class probability is below
``background_threshold`` is assigned background. The others have no background class
(``background_threshold=None``); their unlabeled pixels are 255 and ignored.

Two commands read this table: ``eval-openvocab`` (:mod:`siglip2_dense.openvocab.benchmark_table`, all
benchmarks in one run) and ``tools/eval.py`` with ``data.dataset: <name>`` (one benchmark per config,
``configs/zeroshot/benchmarks/<name>_siglip2-b16-naflex.yaml``; ``build.build_dataset`` reads the data
set through :func:`build_benchmark_split`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from siglip2_dense.data.ade20k import ADE20KDataset
from siglip2_dense.data.ade20k_full import ADE20KFullDataset
from siglip2_dense.data.cityscapes import CityscapesDataset
from siglip2_dense.data.class_name_files import packaged_class_names
from siglip2_dense.data.coco_object import COCOObjectDataset
from siglip2_dense.data.coco_stuff import COCOStuffDataset
from siglip2_dense.data.pascal_context import PascalContext59Dataset, PascalContextDataset
from siglip2_dense.data.pascal_context_459 import PascalContext459Dataset
from siglip2_dense.data.transforms import ImageOnlyResize
from siglip2_dense.data.voc import PascalVOC20Dataset, PascalVOCDataset
from siglip2_dense.errors import RequestError

ItemTransform = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: what to load and how the reference protocol runs it."""

    dataset: type[Dataset]
    """The data set class; built as ``dataset(root, split)``."""
    split: str
    class_names: str
    """The packaged class-name file with the lineage's synonyms (:mod:`~siglip2_dense.data.class_name_files`)."""
    background_threshold: float | None
    """Probability below which a pixel is background (with-background benchmarks), else None."""
    short_side: int
    """Test-time resize: ``Resize(scale=(2048, short_side), keep_ratio=True)``."""
    window: int
    """Sliding-window crop (pixels, square)."""
    stride: int
    """Sliding-window stride (pixels)."""


BENCHMARKS: dict[str, Benchmark] = {
    # cfg_voc21.py: PascalVOCDataset, ImageSets/Segmentation/val.txt, scale (2048, 336), prob_thd=0.1
    # (also area_thd=0.1 and logit_scale=65, method settings); NACLIP: slide_crop=0; ProxyCLIP: prob_thd 0.2
    "voc21": Benchmark(PascalVOCDataset, "val", "sclip_voc21", 0.1, 336, 224, 112),
    # cfg_voc20.py: PascalVOC20Dataset (reduce_zero_label=True), scale (2048, 336); NACLIP: slide_crop=0
    "voc20": Benchmark(PascalVOC20Dataset, "val", "sclip_voc20", None, 336, 224, 112),
    # cfg_context60.py: PascalContext60Dataset, SegmentationContext/val.txt, scale (2048, 336), prob_thd=0.1
    # (ProxyCLIP: 0.15)
    "context60": Benchmark(PascalContextDataset, "val", "sclip_context60", 0.1, 336, 224, 112),
    # cfg_context59.py: PascalContext59Dataset (reduce_zero_label=True), scale (2048, 336)
    "context59": Benchmark(PascalContext59Dataset, "val", "sclip_context59", None, 336, 224, 112),
    # cfg_coco_object.py: COCOObjectDataset, images/val2017, scale (2048, 336), prob_thd=0.1 (ProxyCLIP: 0.25)
    "coco_object": Benchmark(COCOObjectDataset, "val2017", "sclip_coco_object", 0.1, 336, 224, 112),
    # cfg_coco_stuff164k.py: COCOStuffDataset, images/val2017, scale (2048, 448) (NACLIP, ProxyCLIP: 336)
    "coco_stuff": Benchmark(COCOStuffDataset, "val2017", "sclip_coco_stuff", None, 448, 224, 112),
    # cfg_city_scapes.py: CityscapesDataset, leftImg8bit/val, scale (2048, 560) (ProxyCLIP: 448)
    "cityscapes": Benchmark(CityscapesDataset, "val", "sclip_cityscapes", None, 560, 224, 112),
    # cfg_ade20k.py: ADE20KDataset, images/validation, reduce_zero_label, scale (2048, 336) (ProxyCLIP: 448)
    "ade20k": Benchmark(ADE20KDataset, "validation", "sclip_ade20k", None, 336, 224, 112),
    # Beyond the SCLIP lineage: the parent data set's row (cfg_ade20k.py / cfg_context59.py settings), with CAT-Seg's
    # class names (datasets/ade847.json, datasets/pc459.json). CAT-Seg (github.com/cvlab-kaist/CAT-Seg at 6d3a188)
    # tests differently: configs/config.yaml INPUT.MIN_SIZE_TEST 640, MAX_SIZE_TEST 2560 (vitb_384.yaml /
    # vitl_336.yaml: MIN_SIZE_TEST 640); eval.sh sets TEST.SLIDING_WINDOW True and POOLING_SIZES [1,1]; then
    # cat_seg_model.py inference_sliding_window(kernel=384, overlap=0.333, out_res=[640, 640]) resizes the image
    # to 640 x 640 (aspect ratio not kept), scores 384 x 384 windows at stride int(384 * (1 - 0.333)) = 256 plus
    # the whole image at 384 x 384, averages the window sigmoids with the global one, each view fed to CLIP at
    # 384 (ViT-B/16) or 336 (ViT-L/14@336px), and resizes back to the image (sem_seg_postprocess).
    # register_ade20k_847.py: ade20k_full_sem_seg_freq_val_all, images_detectron2/validation, ignore_label=65535
    "ade847": Benchmark(ADE20KFullDataset, "validation", "ade20k_full", None, 336, 224, 112),
    # register_pascal_context.py: context_459_test_sem_seg, JPEGImages + annotations_detectron2/pc459_val,
    # ignore_label=459
    "context459": Benchmark(PascalContext459Dataset, "val", "pascal_context_459", None, 336, 224, 112),
}


LONG_SIDE = 2048
"""The long-side bound of the test-time resize, ``Resize(scale=(2048, short_side), keep_ratio=True)`` in every
``cfg_<name>.py`` of SCLIP (and mmsegmentation's test pipelines)."""


def is_benchmark(name: str) -> bool:
    """Whether ``name`` is a key of :data:`BENCHMARKS`."""
    return name in BENCHMARKS


def get_benchmark(name: str) -> Benchmark:
    """The :data:`BENCHMARKS` row of ``name``."""
    if name not in BENCHMARKS:
        raise RequestError(f"unknown benchmark {name!r}; valid choices: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def benchmark_class_names(name: str) -> tuple[str, ...]:
    """The class names (with synonyms, comma-separated) of benchmark ``name``, in label order."""
    return packaged_class_names(get_benchmark(name).class_names)


def benchmark_resize(short_side: int) -> ImageOnlyResize:
    """The test-time resize of the table: the image to short side ``short_side``, long side <= :data:`LONG_SIDE`
    (mmcv's rescale into ``(2048, short_side)``); the label map keeps its size."""
    return ImageOnlyResize(short_side, LONG_SIDE)


def build_benchmark_split(
    name: str, root: str | os.PathLike, split: str, transform: ItemTransform | None = None
) -> Dataset:
    """Split ``split`` of benchmark ``name``'s data set read from ``root`` (the data set's own root folder)."""
    return get_benchmark(name).dataset(root, split, transform=transform)


def build_benchmark_dataset(name: str, root: str | os.PathLike, transform: ItemTransform | None = None) -> Dataset:
    """The evaluation split of benchmark ``name`` read from ``root`` (the data set's own root folder)."""
    return build_benchmark_split(name, root, get_benchmark(name).split, transform)
