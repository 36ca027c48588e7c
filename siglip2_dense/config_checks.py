"""Values of an :class:`~siglip2_dense.config.ExperimentConfig` that have the right type but mean nothing.

:func:`check_choices` runs when a config is merged (``load_config``) and raises
:class:`~siglip2_dense.errors.ConfigError` naming the key, the value and the valid ones, so a misspelt
choice or an impossible combination fails before any model is loaded. The choices live here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from siglip2_dense.errors import ConfigError

if TYPE_CHECKING:
    from siglip2_dense.config import ExperimentConfig, TrainConfig

TASKS = ("segmentation", "depth", "normals")
DATASETS = ("ade20k", "nyu", "folder", "normals_folder", "voc", "navi")
SCHEDULES = ("poly", "cosine", "warmup_one_cycle_cosine")
BETA1_SCHEDULES = ("none", "mmcv_one_cycle", "warmup_one_cycle")
LOSS_AVERAGES = ("labelled_pixels", "all_pixels")
SEGMENTATION_LOSSES = ("cross_entropy", "binary_cross_entropy")
REPORTED_CHECKPOINTS = ("best", "final")
PHOTOMETRIC_FORMS = ("mmseg", "dinov3")
PRECISIONS = ("auto", "bf16", "fp32")
EVAL_MODES = ("whole", "slide", "native")
CACHE_DTYPES = ("float32", "float16", "bfloat16")
DEPTH_CROPS = ("eigen", "garg")
COLOUR_SCALES = ("unit", "pixel")


def _choice(value: Any, choices: tuple[Any, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not a valid choice; valid choices: {', '.join(map(str, choices))}")


def _positive(value: float, key: str, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{key}={value}: expected a {'non-negative' if allow_zero else 'positive'} number")


def _pair(values: list[Any], key: str) -> None:
    if len(values) != 2 or any(v <= 0 for v in values):
        raise ConfigError(f"{key}={values}: expected two positive numbers [height, width] / [low, high]")


def check_dataset(name: str) -> None:
    """``data.dataset``: one of :data:`DATASETS` or a benchmark of ``siglip2_dense.data.benchmarks.BENCHMARKS``."""
    if name in DATASETS:
        return
    from siglip2_dense.data.benchmarks import BENCHMARKS  # imported only here: it loads the data set classes

    _choice(name, DATASETS + tuple(b for b in BENCHMARKS if b not in DATASETS), "data.dataset")


def check_choices(config: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` for values of the right type that mean nothing (naming the valid ones)."""
    _choice(config.task, TASKS, "task")
    check_dataset(config.data.dataset)
    _choice(config.train.schedule, SCHEDULES, "train.schedule")
    _choice(config.train.beta1_schedule, BETA1_SCHEDULES, "train.beta1_schedule")
    _choice(config.train.loss_average, LOSS_AVERAGES, "train.loss_average")
    _choice(config.train.segmentation_loss, SEGMENTATION_LOSSES, "train.segmentation_loss")
    _choice(config.train.reported_checkpoint, REPORTED_CHECKPOINTS, "train.reported_checkpoint")
    _choice(config.data.photometric_form, PHOTOMETRIC_FORMS, "data.photometric_form")
    check_schedule_keys(config.train)
    if config.data.pad_after_normalise and config.train.feature_cache:
        raise ConfigError("data.pad_after_normalise=true with train.feature_cache=true: the cache stores features of "
                          "crops padded before normalisation; set one of them false")
    _choice(config.train.precision, PRECISIONS, "train.precision")
    _choice(config.train.feature_cache_dtype, CACHE_DTYPES, "train.feature_cache_dtype")
    _choice(config.eval.mode, EVAL_MODES, "eval.mode")
    _choice(config.data.colour_scale, COLOUR_SCALES, "data.colour_scale")
    crop = config.data.fixed_crop
    if crop is not None and (len(crop) != 4 or crop[0] < 0 or crop[2] < 0 or crop[1] <= crop[0] or crop[3] <= crop[2]):
        raise ConfigError(f"data.fixed_crop={crop}: expected [top, bottom, left, right] with 0 <= top < bottom "
                          "and 0 <= left < right (NYUv2: [45, 472, 43, 608])")
    if config.eval.depth_crop is not None:
        _choice(config.eval.depth_crop, DEPTH_CROPS, "eval.depth_crop")
    if config.model.tune_last_blocks < -1:
        raise ConfigError(f"model.tune_last_blocks={config.model.tune_last_blocks}: expected -1 (all), 0 or n > 0")
    check_tune_attention(config)
    train = config.train
    for key in ("iterations", "batch_size", "grad_accum_steps", "log_every", "keep_checkpoints"):
        _positive(getattr(train, key), f"train.{key}")
    for key in ("lr", "weight_decay", "warmup_iterations", "val_every", "checkpoint_every", "min_lr_ratio"):
        _positive(getattr(train, key), f"train.{key}", allow_zero=True)
    if train.batch_size % train.grad_accum_steps:
        raise ConfigError(
            f"train.batch_size={train.batch_size} is not a multiple of train.grad_accum_steps={train.grad_accum_steps}"
        )
    if len(train.betas) != 2:
        raise ConfigError(f"train.betas={train.betas}: expected two numbers")
    _pair(config.data.crop_size, "data.crop_size")
    _pair(config.data.scale_range, "data.scale_range")
    _pair(config.eval.crop_size, "eval.crop_size")
    _pair(config.eval.stride, "eval.stride")
    if not config.eval.scales or any(s <= 0 for s in config.eval.scales):
        raise ConfigError(f"eval.scales={config.eval.scales}: expected a non-empty list of positive numbers")
    _positive(config.data.train_views, "data.train_views", allow_zero=True)
    for key in ("max_num_patches", "eval_max_num_patches"):
        budget = getattr(config.model, key)
        if budget is not None and budget < 1:
            raise ConfigError(f"model.{key}={budget}: expected a positive patch count or null")
    if config.deviations and config.protocol is None:
        raise ConfigError(f"deviations {sorted(config.deviations)} given without a protocol; set protocol: <name> "
                          "(a file in configs/protocols/) or leave deviations out")
    if config.task == "segmentation" and train.loss_args:
        raise ConfigError(
            f"train.loss_args={train.loss_args}: segmentation takes no loss arguments (cross-entropy averaged over "
            "the labelled pixels of the global batch); loss_args are for depth_loss"
        )


def check_tune_attention(config: ExperimentConfig) -> None:
    """``model.tune_attention``: alone (``tune_last_blocks: 0``) and on a SigLIP / SigLIP2 tower."""
    model = config.model
    if not model.tune_attention:
        return
    if model.tune_last_blocks != 0:
        raise ConfigError(f"model.tune_attention=true with model.tune_last_blocks={model.tune_last_blocks}: two "
                          "tuning modes; set model.tune_last_blocks=0 (attention only) or model.tune_attention=false")
    if str(model.backbone).startswith("timm:"):
        raise ConfigError(f"model.tune_attention applies to SigLIP / SigLIP2 towers (separate q_proj / v_proj), not "
                          f"model.backbone={model.backbone!r}: timm ViT blocks have one fused qkv Linear")


def check_schedule_keys(train: TrainConfig) -> None:
    """The one-cycle keys, the beta1 range: values that mean something (ConfigError naming key and value)."""
    if len(train.beta1_range) != 2 or not 0.0 <= train.beta1_range[0] <= train.beta1_range[1] < 1.0:
        raise ConfigError(f"train.beta1_range={train.beta1_range}: expected [base, max] with 0 <= base <= max < 1")
    if train.div_factor <= 0 or not train.final_div_factor > 0:
        raise ConfigError(f"train.div_factor={train.div_factor}, train.final_div_factor={train.final_div_factor}: "
                          "expected positive numbers (final_div_factor may be .inf)")
    if train.schedule == "warmup_one_cycle_cosine" and train.min_lr_ratio != 0.0:
        raise ConfigError(f"train.min_lr_ratio={train.min_lr_ratio} with train.schedule=warmup_one_cycle_cosine: "
                          "expected 0; that schedule ends at lr / div_factor / final_div_factor")
