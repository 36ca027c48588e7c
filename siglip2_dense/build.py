"""From an :class:`~siglip2_dense.config.ExperimentConfig` to the objects of a run.

Public and reusable (``tools/train.py``, ``tools/eval.py``, notebooks):

- :func:`build_backbone`, :func:`build_head_from_config`, :func:`build_model` -> ``DenseModel``;
- :func:`build_head_grid` -> one head per (lr, layers) entry of :func:`grid_entries` on one backbone
  (training, and evaluation of a step checkpoint, build it here and nowhere else);
- :func:`build_dataset` (one split, any transform), :func:`build_datasets` -> (train, val) with the
  configured train and eval transforms, :func:`build_train_transform`, :func:`build_eval_transform`;
- :func:`build_evaluator` -> ``SegmentationEvaluator``, ``DepthEvaluator`` or ``NormalsEvaluator``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from siglip2_dense.backbone.siglip import load_backbone
from siglip2_dense.config import ExperimentConfig
from siglip2_dense.errors import ConfigError, RequestError
from siglip2_dense.evaluation.loop import TARGET_KEYS
from siglip2_dense.head_grid import HeadGrid, layer_positions

ItemTransform = Callable[[dict[str, Any]], dict[str, Any]]
# the targets each configurable data set yields (data.dataset -> item keys)
DATASET_TARGETS = {"ade20k": ("mask",), "folder": ("mask",), "nyu": ("depth", "normals"),
                   "normals_folder": ("normals", "depth"), "voc": ("mask",), "navi": ("depth", "normals")}


def resolve_training_device(device: str) -> torch.device:
    """``train.device``: ``auto`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def backbone_dtype(config: ExperimentConfig, device: torch.device) -> torch.dtype | None:
    """``model.dtype`` as a torch dtype; a tuned backbone defaults to float32 (AdamW master weights)."""
    if config.model.dtype is not None:
        dtype = getattr(torch, config.model.dtype, None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"model.dtype={config.model.dtype!r} is not a torch dtype (e.g. float32, bfloat16)")
        return dtype
    if config.train.precision == "fp32":
        return torch.float32  # the protocols' fp32: weights too, not only no autocast
    return torch.float32 if config.model.tune_last_blocks != 0 or config.model.tune_attention else None


def build_backbone(config: ExperimentConfig, device: str | torch.device | None = None) -> nn.Module:
    """The backbone of ``config.model`` (frozen, partly or fully tuned, or attention only), on ``device``."""
    model = config.model
    device = torch.device(device) if device is not None else resolve_training_device(config.train.device)
    tune_all = model.tune_last_blocks == -1
    return load_backbone(
        model.backbone,
        layers=model.layers,
        norm=model.norm,
        freeze=not tune_all,
        dtype=backbone_dtype(config, device),
        attn_implementation=model.attn_implementation,
        device=device,
        tune_last_blocks=0 if tune_all else model.tune_last_blocks,
        pretrained=model.pretrained,
        tune_attention=model.tune_attention,
    )


def build_head_from_config(config: ExperimentConfig, in_channels: Sequence[int]) -> nn.Module:
    """``build_head(head.name, in_channels=..., **head.args)``, errors naming the config keys."""
    from siglip2_dense.heads import build_head, learns_from_labels

    args = dict(config.head.args)
    try:
        trainable = learns_from_labels(config.head.name)
    except RequestError as error:
        raise ConfigError(f"head.name: {error}") from error
    if not trainable:
        raise ConfigError(f"head.name={config.head.name!r} is built from the tower's own weights and learns "
                          "nothing: evaluate it zero-shot with tools/eval.py; train linear, bins or dpt")
    if "in_channels" in args:
        raise ConfigError("head.args.in_channels: leave it out; heads are built from the backbone's out_channels")
    try:
        return build_head(config.head.name, in_channels=list(in_channels), **args)
    except TypeError as error:
        raise ConfigError(f"head.args {sorted(args)} do not fit head {config.head.name!r}: {error}") from error
    except RequestError as error:
        raise ConfigError(f"head.name / head.args: {error}") from error


def grid_entries(config: ExperimentConfig) -> list[tuple[float, list[int] | None]]:
    """``(lr, layers)`` of every head: the lr grid (or ``train.lr``) crossed with the layer grid (or all)."""
    lrs = list(config.train.lr_grid) or [config.train.lr]
    layer_choices: list[list[int] | None] = [list(c) for c in config.train.layer_grid] or [None]
    return [(float(lr), layers) for layers in layer_choices for lr in lrs]


def build_head_grid(config: ExperimentConfig, backbone: nn.Module) -> HeadGrid:
    """One head per :func:`grid_entries` entry, each reading its layers of ``backbone``, on its device.

    Heads come out in the order of the entries (so a checkpoint's ``heads.<g>`` keys line up).
    """
    positions = [layer_positions(backbone, layers) for _, layers in grid_entries(config)]
    heads = [build_head_from_config(config, [backbone.out_channels[p] for p in pos]) for pos in positions]
    device = next(backbone.parameters()).device
    heads = [head.to(device) for head in heads]
    connect_heads(heads, backbone, config.model.backbone)
    return HeadGrid(backbone, heads, positions)


def connect_heads(heads: Sequence[nn.Module], backbone: nn.Module, text_checkpoint: str) -> None:
    """What the heads of one config read besides the features: the tower's own modules (``bind_backbone``)
    and, for heads scored against text (``set_vocabulary``), their training classes embedded once by
    ``text_checkpoint``'s text tower with their templates (cached on disk) and shared by every head."""
    for head in heads:
        if hasattr(head, "bind_backbone"):
            head.bind_backbone(backbone)
    scored = [head for head in heads if hasattr(head, "set_vocabulary")]
    if not scored:
        return
    from siglip2_dense.text.template_embeddings import checkpoint_template_embeddings, label_list

    first = scored[0]  # one config: every head has the same labels and templates
    labels = label_list(first.labels)
    if len(labels) != first.num_classes:
        raise ConfigError(f"head.args.labels names {len(labels)} classes, head.args.num_classes is "
                          f"{first.num_classes}; label k must name class k of the training set")
    device = next(backbone.parameters()).device
    embeddings = checkpoint_template_embeddings(text_checkpoint, labels, first.templates, device)
    for head in scored:
        head.set_vocabulary(embeddings)


def build_model(config: ExperimentConfig, device: str | torch.device | None = None) -> nn.Module:
    """``DenseModel(build_backbone(config), head)``; the head in float32 on the backbone's device."""
    from siglip2_dense.model import DenseModel

    backbone = build_backbone(config, device)
    head = build_head_from_config(config, backbone.out_channels)
    head.to(next(backbone.parameters()).device)
    connect_heads([head], backbone, config.model.backbone)
    return DenseModel(backbone, head)


def num_classes(config: ExperimentConfig) -> int:
    """The number of classes a segmentation head predicts (``head.args.num_classes``, every head's keyword)."""
    if "num_classes" in config.head.args:
        return int(config.head.args["num_classes"])
    raise ConfigError("segmentation needs the class count in head.args.num_classes")


def build_train_transform(config: ExperimentConfig) -> ItemTransform:
    """The random training transform of ``config.task`` (mmsegmentation ADE20K / BTS NYUv2 recipes; normals:
    the depth recipe with the vectors turned by flips and rotations)."""
    from siglip2_dense.data import build_depth_train_transform, build_segmentation_train_transform
    from siglip2_dense.data.normals_transforms import build_normals_train_transform

    data = config.data
    crop = (int(data.crop_size[0]), int(data.crop_size[1]))
    if config.task == "segmentation":
        return build_segmentation_train_transform(
            crop_size=crop,
            short_side=data.short_side,
            ratio_range=(float(data.scale_range[0]), float(data.scale_range[1])),
            cat_max_ratio=data.cat_max_ratio,
            flip_prob=data.flip_prob,
            photometric=data.photometric,
            photometric_form=data.photometric_form,
            pad_after_normalise=data.pad_after_normalise,
        )
    if config.task == "normals":
        return build_normals_train_transform(
            crop_size=crop, rotate_degrees=data.rotate_degrees, flip_prob=data.flip_prob, colour_prob=data.colour_prob
        )
    return build_depth_train_transform(
        crop_size=crop, rotate_degrees=data.rotate_degrees, flip_prob=data.flip_prob, colour_prob=data.colour_prob,
        colour_scale=data.colour_scale,
        fixed_crop=tuple(int(v) for v in data.fixed_crop) if data.fixed_crop is not None else None,
    )


def build_eval_transform(config: ExperimentConfig) -> ItemTransform:
    """Segmentation: the image resized to short side ``data.short_side`` (label untouched); depth, normals: none."""
    from siglip2_dense.data import build_depth_eval_transform, build_segmentation_eval_transform

    if config.task == "segmentation":
        return build_segmentation_eval_transform(config.data.short_side, 4 * config.data.short_side)
    return build_depth_eval_transform()


def build_dataset(config: ExperimentConfig, split: str, transform: ItemTransform | None = None) -> Dataset:
    """One split of ``config.data.dataset`` under ``config.data.root``, with ``transform`` (or none)."""
    from siglip2_dense.data import (
        ADE20KDataset,
        FolderNormalsDataset,
        NAVIDataset,
        NYUv2Dataset,
        PascalVOCDataset,
    )
    from siglip2_dense.data.benchmarks import build_benchmark_split, is_benchmark
    from siglip2_dense.data.folder import open_folder_split

    data = config.data
    if data.dataset == "ade20k":
        dataset = ADE20KDataset(data.root, split=split, transform=transform)
    elif data.dataset == "nyu":
        dataset = NYUv2Dataset(data.root, split=split, layout=data.nyu_layout, transform=transform,
                               normals=config.task == "normals")
    elif data.dataset == "voc":
        dataset = PascalVOCDataset(data.root, split=split, transform=transform)
    elif data.dataset == "navi":
        dataset = NAVIDataset(data.root, split=split, transform=transform)
    elif data.dataset == "normals_folder":
        dataset = FolderNormalsDataset(data.root, split=split, transform=transform)
    elif is_benchmark(data.dataset):  # voc21, context59, ...: the open-vocabulary benchmark registry
        dataset = build_benchmark_split(data.dataset, data.root, split, transform)
    else:
        dataset = open_folder_split(data.root, split, transform)
    target = TARGET_KEYS[config.task]
    targets = ("mask",) if is_benchmark(data.dataset) else DATASET_TARGETS[data.dataset]
    if target not in targets:
        raise ConfigError(f"task={config.task!r} needs {target} targets; data.dataset={data.dataset!r} has none "
                          f"(it has {', '.join(targets)})")
    return dataset


def build_datasets(config: ExperimentConfig) -> tuple[Dataset, Dataset]:
    """``(train, val)``: ``data.train_split`` with the training transform, ``data.val_split`` with the eval one."""
    train = build_dataset(config, config.data.train_split, build_train_transform(config))
    val = build_dataset(config, config.data.val_split, build_eval_transform(config))
    return train, val


def ignore_index_of(dataset: Dataset) -> int:
    """The label that marks unlabelled pixels (the data set's ``ignore_index``; 255 by convention)."""
    return int(getattr(dataset, "ignore_index", 255))


def build_evaluator(config: ExperimentConfig, ignore_index: int = 255) -> Any:
    """``SegmentationEvaluator(num_classes, ignore_index)``, ``DepthEvaluator(min, max, crop)`` or ``NormalsEvaluator()``."""
    from siglip2_dense.evaluation import DepthEvaluator, NormalsEvaluator, SegmentationEvaluator

    if config.task == "segmentation":
        return SegmentationEvaluator(num_classes=num_classes(config), ignore_index=ignore_index)
    if config.task == "normals":
        return NormalsEvaluator()
    return DepthEvaluator(
        min_depth=config.data.min_depth, max_depth=config.data.max_depth, crop=config.eval.depth_crop
    )
