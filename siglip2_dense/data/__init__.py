"""Data sets, synthetic data, transforms and collate functions for dense prediction.

Every data set yields dicts ``{"image": [H, W, 3] uint8 RGB, <target>, "path": str}`` where the target
is ``"mask"`` ([H, W] uint8 class indices, 255 = ignore; uint16 with 65535 = ignore for the data sets
of more than 255 classes, ADE-847 and PC-459, whose ``ignore_index`` says so) and/or ``"depth"`` ([H, W] float32 metres,
0 = invalid) and/or ``"normals"`` ([H, W, 3] float32 surface normals, zero = missing); each takes an optional ``transform`` (an ``item -> item`` callable, see the builders).
"""

import os

# albumentations asks PyPI for its newest version when it is imported (a network request, and a
# warning on a machine without one); a data loader should not phone home, so the check is off
# unless the user sets the variable themselves.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


from siglip2_dense.data.ade20k import ADE20KDataset, ade20k_class_names, ade20k_palette
from siglip2_dense.data.ade20k_full import ADE20KFullDataset
from siglip2_dense.data.benchmarks import (
    BENCHMARKS,
    Benchmark,
    benchmark_class_names,
    build_benchmark_dataset,
)
from siglip2_dense.data.cityscapes import CityscapesDataset
from siglip2_dense.data.coco_instances import COCOObjectInstancesDataset
from siglip2_dense.data.coco_object import COCOObjectDataset
from siglip2_dense.data.coco_stuff import COCOStuffDataset
from siglip2_dense.data.collate import collate_as_lists, collate_padded
from siglip2_dense.data.folder import FolderSegmentationDataset
from siglip2_dense.data.navi import NAVIDataset
from siglip2_dense.data.normals_folder import FolderNormalsDataset
from siglip2_dense.data.nyu import NYUv2Dataset
from siglip2_dense.data.pascal_context import PascalContext59Dataset, PascalContextDataset
from siglip2_dense.data.pascal_context_459 import PascalContext459Dataset
from siglip2_dense.data.synthetic import CLASS_NAMES as SYNTHETIC_CLASS_NAMES
from siglip2_dense.data.synthetic import SyntheticDataset, SyntheticScene, make_scene
from siglip2_dense.data.transforms import (
    build_depth_eval_transform,
    build_depth_train_transform,
    build_segmentation_eval_transform,
    build_segmentation_train_transform,
)
from siglip2_dense.data.voc import PascalVOC20Dataset, PascalVOCDataset
from siglip2_dense.data.write_formats import write_synthetic

__all__ = [
    "NAVIDataset",
    "ADE20KDataset",
    "ADE20KFullDataset",
    "BENCHMARKS",
    "Benchmark",
    "COCOObjectDataset",
    "CityscapesDataset",
    "COCOObjectInstancesDataset",
    "COCOStuffDataset",
    "FolderNormalsDataset",
    "FolderSegmentationDataset",
    "NYUv2Dataset",
    "PascalContext59Dataset",
    "PascalContext459Dataset",
    "PascalContextDataset",
    "PascalVOC20Dataset",
    "PascalVOCDataset",
    "SYNTHETIC_CLASS_NAMES",
    "SyntheticDataset",
    "SyntheticScene",
    "ade20k_class_names",
    "benchmark_class_names",
    "build_benchmark_dataset",
    "ade20k_palette",
    "build_depth_eval_transform",
    "build_depth_train_transform",
    "build_segmentation_eval_transform",
    "build_segmentation_train_transform",
    "collate_as_lists",
    "collate_padded",
    "make_scene",
    "write_synthetic",
]
