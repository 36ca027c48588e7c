"""Experiment configs: nested dataclasses, loaded from YAML with dotted command-line overrides.

An experiment is one :class:`ExperimentConfig` with five sections::

    name, task                  what the run is called, "segmentation", "depth" or "normals"
    model:  ModelConfig         the backbone (checkpoint, taps, what is tuned, patch budget)
    head:   HeadConfig          the head's registered name and constructor arguments
    data:   DataConfig          the data set, its splits and the training augmentation
    train:  TrainConfig         optimisation, schedule, checkpoints, feature cache, lr grid
    eval:   EvalConfig          how validation predicts (whole / slide / native, TTA)

``load_config("configs/x.yaml", ["train.lr=1e-4", "model.layers=[-4,-3,-2,-1]"])`` merges the YAML
(read by OmegaConf's safe loader) and the overrides onto the dataclass defaults. A key that is
not a field, or a value of the wrong type, raises :class:`~siglip2_dense.errors.ConfigError`
naming the key and listing the section's valid keys. :func:`save_config` writes the resolved
config (atomically) as ``config.yaml``; :func:`config_from_yaml_text` reads one back.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from siglip2_dense.config_checks import check_choices
from siglip2_dense.errors import ConfigError, MissingFileError
from siglip2_dense.files import write_text_atomic


@dataclass
class ModelConfig:
    """The backbone, as :func:`siglip2_dense.load_backbone` takes it."""

    backbone: str = MISSING
    """Hub id, local checkpoint directory, or ``"timm:<model name>"``."""
    layers: int | list[int] = 1
    """int n = the last n blocks; a list = block indices (negative allowed)."""
    norm: bool = True
    """Apply the final layernorm to every tapped layer."""
    tune_last_blocks: int = 0
    """0 = frozen backbone (a probe); n > 0 = tune the last n blocks; -1 = tune the whole tower."""
    tune_attention: bool = False
    """SigLIP / SigLIP2 towers: tune only the query and value projections (weight and bias) of every
    block and the position embedding, nothing else of the tower (no layer norm, k / out projection,
    MLP, patch embedding, post layernorm or MAP head), as CAT-Seg fine-tunes CLIP
    (cvlab-kaist/CAT-Seg, cat_seg/cat_seg_model.py, ``clip_finetune: attention``; its configs/config.yaml
    trains them at lr * 0.01, here ``train.backbone_lr_multiplier``). Needs ``tune_last_blocks: 0``."""
    dtype: str | None = None
    """Backbone parameter dtype (``"float32"``, ``"bfloat16"``); None: bf16 on CUDA, fp32 on CPU."""
    attn_implementation: str | None = None
    """``"eager"``, ``"sdpa"`` or ``"flash_attention_2"``; None: sdpa."""
    pretrained: bool = True
    """timm backbones only: False builds random weights."""
    max_num_patches: int | None = None
    """NaFlex patch budget per image in training (and in evaluation unless ``eval_max_num_patches``
    is set); None: the processor's. A config that sets one is a NaFlex config (FixRes and timm
    towers refuse a budget)."""
    eval_max_num_patches: int | None = None
    """NaFlex patch budget per image (or window) in validation and evaluation; None: ``max_num_patches``.
    Two budgets let both splits stay at native scale (NYUv2: 416x544 crops = 884 patches of 16 px,
    480x640 test images = 1200), as the references feed them."""


@dataclass
class HeadConfig:
    """The head: ``build_head(name, in_channels=backbone.out_channels, **args)``."""

    name: str = "linear"
    """A key of ``siglip2_dense.heads.HEADS`` (``linear``, ``bins``, ``dpt``)."""
    args: dict[str, Any] = field(default_factory=dict)
    """The head's constructor arguments other than ``in_channels`` (e.g. ``num_classes: 150``)."""


@dataclass
class DataConfig:
    """The data set, its splits, and the training augmentation (mmsegmentation / BTS recipes)."""

    dataset: str = "ade20k"
    """``ade20k`` (root = ADEChallengeData2016), ``nyu`` (BTS or .mat layout), ``folder``
    (root/class_names.txt and root/<split>/{images,masks}, or root/{images,masks} + root/<split>.txt), ``normals_folder``
    (root/<split>/{images,normals[,depth]}, :class:`~siglip2_dense.data.FolderNormalsDataset`), ``voc``
    (root = VOCdevkit/VOC2012, VOC21; split ``train_aug`` = mmsegmentation's augmented set), ``navi`` (root =
    navi_v1, :class:`~siglip2_dense.data.NAVIDataset`: depth and normals), or an open-vocabulary benchmark of
    ``siglip2_dense.data.benchmarks.BENCHMARKS`` (``voc21``, ``context59``, ...; root = its data set's folder).
    ``nyu`` with ``task: normals`` reads the labeled .mat's normals (``nyu_layout: mat``,
    :mod:`~siglip2_dense.data.nyu_normals`)."""
    root: str = MISSING
    """The data set folder."""
    train_split: str = "training"
    """Split trained on (ADE20K: training; NYUv2: train; folder: a sub-folder name)."""
    val_split: str = "validation"
    """Split validated on (ADE20K: validation; NYUv2: test)."""
    nyu_layout: str = "bts"
    """NYUv2 only: ``bts`` or ``mat``."""
    num_workers: int = 4
    """DataLoader worker processes per training process."""
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    """Training crop ``[height, width]`` in pixels."""
    short_side: int = 512
    """Segmentation: the short side the train scale range is relative to, and the eval resize."""
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    """Segmentation: random rescale ratio range of the short side."""
    cat_max_ratio: float = 0.75
    """Segmentation: re-draw crops where one class covers this fraction or more."""
    flip_prob: float = 0.5
    """Horizontal flip probability."""
    photometric: bool = True
    """Segmentation: mmsegmentation's PhotoMetricDistortion."""
    photometric_form: str = "mmseg"
    """Segmentation: which photometric distortion ``photometric`` applies: ``mmseg`` (saturation scaled in
    OpenCV's HSV, hue ``+ randint(-18, 18)`` of 180) or ``dinov3`` (DINOv3's ``PhotoMetricDistortion``:
    torchvision's ``adjust_saturation`` and ``adjust_hue(U(-0.5, 0.5))``, dinov3/eval/segmentation/transforms.py:67-81)."""
    pad_after_normalise: bool = False
    """Segmentation: a crop smaller than ``crop_size`` is padded with 0 *after* the backbone's normalisation
    (mmsegmentation's Normalize then Pad, DINOv2; DINOv3's NormalizeImage then PadTensor): the padded pixels
    enter the backbone as 0, whatever its mean. False: padded with pixel value 0 before normalisation."""
    rotate_degrees: float = 2.5
    """Depth and normals: random rotation range (+-degrees, applied with probability 1/2; normals turn with it)."""
    colour_prob: float = 0.5
    """Depth and normals: probability of BTS's colour augmentation."""
    colour_scale: str = "unit"
    """Depth: the values the colour augmentation's gamma sees: ``unit`` (BTS: x / 255 in [0, 1]) or
    ``pixel`` (DINOv2's toolbox ``ColorAug`` and DINOv3: 0-255 values, clipped at 255)."""
    fixed_crop: list[int] | None = None
    """Depth: ``[top, bottom, left, right]`` rows and columns kept before any random step; NYUv2's
    ``[45, 472, 43, 608]`` (toolbox ``NYUCrop``, DINOv2 and DINOv3) drops the registration border. None: no crop."""
    min_depth: float = 1e-3
    """Depth: ground truth counts as valid above this (metres), in the loss and the metrics."""
    max_depth: float = 10.0
    """Depth: ground truth counts as valid below this (metres)."""
    train_views: int = 0
    """0: a fresh random augmentation per image and epoch; V > 0: V fixed augmented views per image
    (view v of image i seeded by (seed, v, i)), the training set being the V * N views."""


@dataclass
class TrainConfig:
    """The iteration-based optimisation loop, its checkpoints and the fast frozen probes."""

    output_dir: str | None = None
    """Where checkpoints, config.yaml and log.jsonl go; None: ``runs/<name>``."""
    iterations: int = 40000
    """Optimiser steps."""
    batch_size: int = 16
    """Global batch (all processes, all accumulation steps together)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimiser step in each process (``batch_size`` stays the step's batch). Exact
    for the linear and bins heads on a frozen backbone: their BatchNorm takes the statistics of the
    whole step's batch (a first pass over the micro-batches' features) and updates its running
    statistics once per step, so a step equals one with the whole batch in one forward (and N
    processes, whose statistics are synced, equal one). Not exact, with one warning at start:
    BatchNorm after trained layers (DPT with ``use_batchnorm``), normalised per micro-batch; a tuned
    backbone (statistics exact, their gradient into the backbone per micro-batch; features computed
    twice); depth losses, which pool over the batch and are averaged over micro-batches. With a frozen
    backbone the step's features are held in memory from the statistics pass to the forward."""
    lr: float = 1e-3
    """Head learning rate (peak, after warm-up)."""
    lr_grid: list[float] = field(default_factory=list)
    """Several head learning rates trained in one pass over the same features (frozen backbone)."""
    layer_grid: list[list[int]] = field(default_factory=list)
    """Several layer choices (block indices, each a subset of ``model.layers``), crossed with the lr grid."""
    backbone_lr_multiplier: float = 0.1
    """Backbone learning rate = lr * this, when part of the backbone is tuned."""
    weight_decay: float = 1e-4
    """AdamW weight decay (never on norms, biases, embeddings' position tables or 1-D parameters, unless
    ``weight_decay_on_norms_and_biases``)."""
    weight_decay_on_norms_and_biases: bool = False
    """True: each head is one AdamW group, every parameter decayed (DINOv2's mmseg config has no
    ``paramwise_cfg``; DINOv3 builds one group). A tuned backbone keeps the split either way."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas (beta1 is overridden step by step when ``beta1_schedule`` is not ``none``)."""
    beta1_schedule: str = "none"
    """``none``; ``mmcv_one_cycle`` (mmcv's ``OneCycleMomentumUpdaterHook`` with its defaults, DINOv2's NYU
    ``momentum_config=dict(policy='OneCycle')``: cosine from max to base over the first 30% of steps, back
    to max by the last); ``warmup_one_cycle`` (DINOv3's ``WarmupOneCycleLR(use_beta1=True)``: 0 during the
    warm-up, then cosine from base to max)."""
    beta1_range: list[float] = field(default_factory=lambda: [0.85, 0.95])
    """``[base, max]`` momentum of the beta1 schedules (mmcv and DINOv3 defaults)."""
    schedule: str = "poly"
    """Decay after warm-up: ``poly``, ``cosine`` (mmcv hooks) or ``warmup_one_cycle_cosine`` (DINOv3's
    ``WarmupOneCycleLR``, ``anneal_strategy='cos'``: its warm-up, then cosine to ``lr / div_factor /
    final_div_factor``; ``min_lr_ratio`` must stay 0 there, the floor is the factors')."""
    div_factor: float = 25.0
    """``warmup_one_cycle_cosine`` only: ``initial_lr = lr / div_factor`` (DINOv3 default 25)."""
    final_div_factor: float = 1000.0
    """``warmup_one_cycle_cosine`` only: the last lr is ``lr / div_factor / final_div_factor`` (``.inf``: 0)."""
    poly_power: float = 1.0
    """Exponent of the poly decay."""
    warmup_iterations: int = 1500
    """Linear warm-up length."""
    warmup_ratio: float = 1e-6
    """Warm-up starts at lr * this."""
    min_lr_ratio: float = 0.0
    """The decay ends at (each group's) lr * this."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this; None: no clipping."""
    seed: int = 0
    """Seeds the head initialisation, the data order and every augmentation."""
    precision: str = "auto"
    """``auto`` (bf16 autocast on CUDA, float32 on CPU), ``bf16`` or ``fp32``. ``fp32`` also loads the
    backbone's weights in float32 (unless ``model.dtype`` says otherwise), in training and in
    evaluation, as DINOv2 / DINOv3 run their probes; the dtype is recorded in ``metrics.json``."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu`` or ``cuda``."""
    log_every: int = 50
    """Write a log.jsonl line every this many steps."""
    val_every: int = 4000
    """Validate every this many steps (and always at the end); 0: only at the end."""
    checkpoint_every: int = 4000
    """Write a resumable checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 1
    """How many resumable step checkpoints to keep (the newest)."""
    resume: str = ""
    """``""``: start fresh; ``"auto"``: continue from the newest complete checkpoint in output_dir if any;
    or the path of one checkpoint directory."""
    feature_cache: bool = False
    """Frozen backbone + fixed views: compute the features once, cache them on disk, train heads on the cache."""
    feature_cache_dir: str | None = None
    """Where cached features live; None: ``<output_dir>/feature_cache``."""
    feature_cache_dtype: str = "float32"
    """Storage dtype of cached features: ``float32``, ``float16`` or ``bfloat16``."""
    loss_average: str = "labelled_pixels"
    """Segmentation: cross-entropy summed over the labelled pixels of the global batch and divided by their
    number (``labelled_pixels``, mmseg ``avg_non_ignore=True``) or by the number of all its pixels, ignored
    ones included (``all_pixels``: mmseg ``CrossEntropyLoss(avg_non_ignore=False)``, DINOv2, DINOv3)."""
    segmentation_loss: str = "cross_entropy"
    """Segmentation: ``cross_entropy`` (softmax over the classes, averaged as ``loss_average`` says) or
    ``binary_cross_entropy`` (CAT-Seg's: a sigmoid per class against the one-hot target, ignored pixels
    negative for every class, averaged over all pixels and classes; ``losses.one_hot_binary_cross_entropy_sum``)."""
    reported_checkpoint: str = "best"
    """What the run reports and saves as its model: ``best`` (the best validation head so far in ``best/``)
    or ``final`` (the model after the last step in ``final/``, DINOv2 and DINOv3's reported model; ``best/``
    is then not written)."""
    loss_args: dict[str, Any] = field(default_factory=dict)
    """Depth only: keyword arguments of ``losses.depth_loss``: ``form`` (``bts``: scale * SiLog +
    MiDaS gradient matching; ``dinov2``: DINOv2's SigLoss with its mean-only warm-up and its
    GradientLoss as written), and that form's weights (see :mod:`siglip2_dense.losses`)."""


@dataclass
class EvalConfig:
    """How validation predicts; the metrics are the data set's (mIoU or the depth errors)."""

    mode: str = "slide"
    """``whole`` (one forward per image), ``slide`` (mmseg sliding window) or ``native`` (NaFlex aspect)."""
    crop_size: list[int] = field(default_factory=lambda: [512, 512])
    """Sliding-window size ``[height, width]``."""
    stride: list[int] = field(default_factory=lambda: [341, 341])
    """Sliding-window step ``[height, width]``."""
    flip: bool = False
    """Add horizontally flipped predictions (test-time augmentation)."""
    scales: list[float] = field(default_factory=lambda: [1.0])
    """Image scales averaged (test-time augmentation)."""
    depth_crop: str | None = "eigen"
    """Depth: evaluation crop ``eigen``, ``garg`` or None."""


@dataclass
class ExperimentConfig:
    """One experiment: everything ``tools/train.py`` needs."""

    name: str = MISSING
    """The run's name (default output folder ``runs/<name>``)."""
    task: str = "segmentation"
    """``segmentation`` or ``depth``."""
    model: ModelConfig = field(default_factory=ModelConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    protocol: str | None = None
    """The reference protocol this experiment reproduces: a file ``configs/protocols/<protocol>.yaml``
    (None: no claim). ``tests/test_protocols.py`` fails where the config differs from it anywhere
    not listed in ``deviations``."""
    deviations: dict[str, str] = field(default_factory=dict)
    """``{dotted key: reason}``: where this experiment departs from its protocol on purpose, and why."""


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "head": HeadConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def field_names(cls: type) -> list[str]:
    """The field names of a config dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def load_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML experiment, apply ``key=value`` overrides, check it, return the dataclasses.

    Args:
        path: a YAML file whose keys are (a subset of) :class:`ExperimentConfig`'s.
        overrides: dotted ``section.key=value`` strings; values are parsed as YAML
            (``train.lr=1e-4``, ``model.layers=[-4,-3,-2,-1]``, ``model.dtype=null``).

    Raises:
        MissingFileError: ``path`` does not exist.
        ConfigError: an unknown key, a wrong type, a missing required value, or an invalid choice.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"config file not found: {path}")
    try:
        from_file = OmegaConf.load(path)
    except Exception as error:  # yaml's scanner / parser errors
        raise ConfigError(f"cannot parse {path} as YAML: {error}") from error
    if not isinstance(from_file, DictConfig):
        raise ConfigError(f"{path} holds a {type(from_file).__name__}; expected a mapping of config sections")
    return merge_config(from_file, overrides, source=str(path))


def config_from_yaml_text(text: str) -> ExperimentConfig:
    """An :class:`ExperimentConfig` from the text :func:`save_config` wrote (a checkpoint's config.yaml)."""
    try:
        loaded = OmegaConf.create(text)
    except Exception as error:  # yaml's scanner / parser errors
        raise ConfigError(f"cannot parse the config text as YAML: {error}") from error
    if not isinstance(loaded, DictConfig):
        raise ConfigError("config text is not a mapping of config sections")
    return merge_config(loaded, (), source="config text")


def merge_config(values: DictConfig, overrides: list[str] | tuple[str, ...] = (), source: str = "") -> ExperimentConfig:
    """Merge ``values`` and then ``overrides`` onto the defaults; see :func:`load_config`."""
    for override in overrides:
        if "=" not in override or override.startswith("="):
            raise ConfigError(f"override {override!r} is not key=value (e.g. train.lr=1e-4)")
    where = f" (in {source})" if source else ""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), values)
        where = " (in the command-line overrides)"
        merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(describe_error(error) + where) from error
    assert isinstance(config, ExperimentConfig)
    check_choices(config)
    return config


def describe_error(error: OmegaConfBaseException) -> str:
    """OmegaConf's error rephrased: the key, what is wrong, and the keys that are valid there."""
    key = str(getattr(error, "full_key", "") or getattr(error, "key", "") or "?")
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    valid = valid_keys(parent)
    listing = f"; valid keys{' in ' + repr(parent) if parent else ''}: {', '.join(valid)}" if valid else ""
    if isinstance(error, ConfigKeyError):
        return f"unknown config key {key!r}{listing}"
    if isinstance(error, MissingMandatoryValue):
        return f"config key {key!r} is required but has no value; set it in the YAML or as {key}=..."
    if isinstance(error, ValidationError):
        message = str(error).splitlines()[0]
        return f"config key {key!r} has a value of the wrong type: {message}{listing}"
    return f"config key {key!r}: {str(error).splitlines()[0]}{listing}"


def valid_keys(parent: str) -> list[str]:
    """Field names of the section at dotted path ``parent`` ("" = the top level), or [] if not a section."""
    if parent == "":
        return field_names(ExperimentConfig)
    if parent in SECTIONS:
        return field_names(SECTIONS[parent])
    return []




def config_to_container(config: ExperimentConfig) -> dict[str, Any]:
    """The config as plain dicts and lists (for YAML, JSON or a checkpoint)."""
    container = OmegaConf.to_container(OmegaConf.structured(config), resolve=True)
    assert isinstance(container, dict)
    return container


def config_to_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML text."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def save_config(config: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    write_text_atomic(path, config_to_yaml(config))
    return path


def output_dir(config: ExperimentConfig) -> Path:
    """The run's folder: ``train.output_dir``, or ``runs/<name>``."""
    return Path(config.train.output_dir) if config.train.output_dir else Path("runs") / config.name
