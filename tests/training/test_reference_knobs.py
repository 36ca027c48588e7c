"""The DINOv2 / DINOv3 protocol knobs against independent transcriptions of the reference code.

- DINOv3 ``WarmupOneCycleLR`` (facebookresearch/dinov3 dinov3/eval/segmentation/schedulers.py:29-147,
  the depth copy dinov3/eval/depth/schedulers.py:30-152) is transcribed below as a torch ``LRScheduler``
  and stepped on a real AdamW next to ours: lr and beta1 of every step.
- mmcv's ``OneCycleMomentumUpdaterHook`` (open-mmlab/mmcv mmcv/runner/hooks/momentum_updater.py,
  ``before_run`` phases and ``get_momentum``) is transcribed as a function of ``runner.iter``.
- mmseg's ``CrossEntropyLoss(avg_non_ignore=False)``: ``F.cross_entropy(reduction='none',
  ignore_index=255)`` then ``loss.mean()`` (mmseg/models/losses/cross_entropy_loss.py, utils.weight_reduce_loss).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler

from siglip2_dense import DenseFeatures
from siglip2_dense.config import TrainConfig, load_config
from siglip2_dense.errors import ConfigError
from siglip2_dense.heads import build_head
from siglip2_dense.losses import cross_entropy_denominator
from siglip2_dense.training.optim import HeadGroup, build_optimizer, build_scheduler

ROOT = Path(__file__).resolve().parents[2]


# --- DINOv3 WarmupOneCycleLR, transcribed ---------------------------------------------------------


def _annealing_cos(start, end, pct):  # schedulers.py:18-21
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class ReferenceWarmupOneCycleLR(lr_scheduler.LRScheduler):
    """dinov3/eval/segmentation/schedulers.py:29-147 with anneal_strategy='cos', restated line by line."""

    def __init__(self, optimizer, max_lr, total_steps, warmup_iters, warmup_ratio, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1000.0, use_beta1=True):
        self.warmup_iters, self.warmup_ratio, self.total_steps = warmup_iters, warmup_ratio, total_steps
        self.base_momentum, self.max_momentum, self.use_beta1 = base_momentum, max_momentum, use_beta1
        self.final_div_factor = final_div_factor
        for group in optimizer.param_groups:
            ml = group["lr"]
            group["initial_lr"] = ml / div_factor
            group["max_lr"] = ml
            group["min_lr"] = group["initial_lr"] / final_div_factor
            group["lr"] = ml / final_div_factor if warmup_iters > 0 else group["initial_lr"]
            if use_beta1:
                group["betas"] = (max_momentum, *group["betas"][1:])
        super().__init__(optimizer, -1)

    def _compute(self, group):
        step_num = (self._step_count - 1) if self.last_epoch != -1 else 0
        momentum = 0
        if step_num < self.warmup_iters:
            if self.warmup_ratio:
                k = (1 - step_num / self.warmup_iters) * (1 - self.warmup_ratio)
                thelr = group["max_lr"] * (1 - k) * (1 - step_num / self.total_steps)
            else:
                gmax = group["max_lr"] * (1 + math.cos(math.pi * step_num / float(self.total_steps))) / 2
                thelr = group["max_lr"] / self.final_div_factor + gmax * step_num / float(self.warmup_iters)
        else:
            pct = (step_num - self.warmup_iters) / float(self.total_steps - self.warmup_iters)
            momentum = _annealing_cos(self.base_momentum, self.max_momentum, pct)
            thelr = _annealing_cos(group["max_lr"], group["min_lr"], (step_num + 1) / float(self.total_steps))
        return thelr, momentum

    def get_lr(self):
        lrs = []
        for group in self.optimizer.param_groups:
            lr, momentum = self._compute(group)
            lrs.append(lr)
            if self.use_beta1:
                group["betas"] = (momentum, *group["betas"][1:])
        return lrs


def _adamw(lr: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=lr, betas=betas)


def _ours(config: TrainConfig):
    head = torch.nn.Conv2d(4, 2, 1)
    optimizer = build_optimizer([HeadGroup(list(head.named_parameters()), config.lr)], None, config)
    return optimizer, build_scheduler(optimizer, config)


@pytest.mark.parametrize("recipe", ["ade", "nyu"])
def test_one_cycle_schedule_and_its_beta1_follow_dinov3_step_by_step(recipe):
    total, warmup = 200, 60
    if recipe == "ade":  # D3-ADE:9-17: warmup_ratio 1e-6, final_div_factor inf, use_beta1 False
        config = TrainConfig(lr=1e-3, iterations=total, warmup_iterations=warmup, warmup_ratio=1e-6,
                             schedule="warmup_one_cycle_cosine", final_div_factor=math.inf, beta1_schedule="none")
        reference = ReferenceWarmupOneCycleLR(_adamw(1e-3), 1e-3, total, warmup, 1e-6, final_div_factor=math.inf,
                                              use_beta1=False)
    else:  # D3-NYU:4-16: final_div_factor 1000, warmup_ratio default 0, use_beta1 default True, beta2 0.99
        config = TrainConfig(lr=3e-4, iterations=total, warmup_iterations=warmup, warmup_ratio=0.0,
                             schedule="warmup_one_cycle_cosine", final_div_factor=1000.0,
                             beta1_schedule="warmup_one_cycle", betas=[0.9, 0.99])
        reference = ReferenceWarmupOneCycleLR(_adamw(3e-4, (0.9, 0.99)), 3e-4, total, warmup, 0.0)
    optimizer, scheduler = _ours(config)
    worst_lr = worst_beta = 0.0
    for _ in range(total):
        for group in optimizer.param_groups:
            want = reference.optimizer.param_groups[0]
            worst_lr = max(worst_lr, abs(group["lr"] - want["lr"]) / config.lr)
            worst_beta = max(worst_beta, abs(group["betas"][0] - want["betas"][0]))
            assert group["betas"][1] == want["betas"][1]
        optimizer.step()
        scheduler.step()
        reference.optimizer.step()
        reference.step()
    assert worst_lr < 1e-12 and worst_beta < 1e-12
    if recipe == "ade":
        assert optimizer.param_groups[0]["betas"][0] == 0.9  # use_beta1 False: beta1 untouched
    # the NYU beta1 is 0 during the warm-up, as the reference computes it (momentum = 0 there)
    assert recipe == "ade" or beta_at(config, 10) == 0.0


def beta_at(config: TrainConfig, step: int) -> float:
    optimizer, scheduler = _ours(config)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["betas"][0]


# --- mmcv OneCycleMomentumUpdaterHook, transcribed -------------------------------------------------


def mmcv_one_cycle_momentum(curr_iter: int, max_iters: int, base=0.85, peak=0.95, pct_start=0.3) -> float:
    phases = [{"end_iter": float(pct_start * max_iters) - 1, "start": peak, "end": base},
              {"end_iter": max_iters - 1, "start": base, "end": peak}]
    start_iter = 0
    for i, phase in enumerate(phases):
        end_iter = phase["end_iter"]
        if curr_iter <= end_iter or i == len(phases) - 1:
            pct = (curr_iter - start_iter) / (end_iter - start_iter)
            return _annealing_cos(phase["start"], phase["end"], pct)
        start_iter = end_iter
    raise AssertionError


def test_mmcv_one_cycle_beta1_follows_the_hook_every_iteration():
    config = TrainConfig(lr=5e-3, iterations=384, warmup_iterations=128, warmup_ratio=1e-3, schedule="cosine",
                         min_lr_ratio=1e-8, beta1_schedule="mmcv_one_cycle")
    optimizer, scheduler = _ours(config)
    worst = 0.0
    for step in range(config.iterations):
        worst = max(worst, abs(optimizer.param_groups[0]["betas"][0] - mmcv_one_cycle_momentum(step, 384)))
        optimizer.step()
        scheduler.step()
    assert worst < 1e-12
    assert beta_at(config, 0) == pytest.approx(0.95) and beta_at(config, 114) == pytest.approx(0.85, abs=1e-4)


def test_scheduler_state_stays_json_and_a_resumed_schedule_sets_the_same_beta1():
    import json

    config = TrainConfig(iterations=50, warmup_iterations=10, beta1_schedule="mmcv_one_cycle")
    optimizer, scheduler = _ours(config)
    for _ in range(20):
        optimizer.step()
        scheduler.step()
    state = json.loads(json.dumps(scheduler.state_dict()))
    resumed_optimizer, resumed = _ours(config)
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed.load_state_dict(state)
    for _ in range(5):
        optimizer.step()
        resumed_optimizer.step()
        scheduler.step()
        resumed.step()
        assert resumed_optimizer.param_groups[0]["betas"] == optimizer.param_groups[0]["betas"]
        assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


# --- parameter groups, cross-entropy, head init and dropout ---------------------------------------


def test_weight_decay_on_every_head_parameter_is_one_group():
    head = build_head("linear", in_channels=[8], num_classes=3)
    named = list(head.named_parameters())
    split = build_optimizer([HeadGroup(named, 1e-3)], None, TrainConfig(weight_decay=1e-4))
    assert sorted(g["weight_decay"] for g in split.param_groups) == [0.0, 1e-4]
    one = build_optimizer([HeadGroup(named, 1e-3)], None,
                          TrainConfig(weight_decay=1e-4, weight_decay_on_norms_and_biases=True))
    assert len(one.param_groups) == 1 and one.param_groups[0]["weight_decay"] == 1e-4
    assert {id(p) for p in one.param_groups[0]["params"]} == {id(p) for _, p in named}  # BN scale, biases too


def test_all_pixel_average_equals_mmseg_avg_non_ignore_false():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 6, 7)
    target = torch.randint(0, 5, (2, 6, 7))
    target[0, :3] = 255
    target[1, :, :2] = 255
    # mmseg cross_entropy(avg_non_ignore=False): per-pixel loss (0 where ignored), mean over every element
    mmseg = F.cross_entropy(logits, target, reduction="none", ignore_index=255).mean()
    summed = F.cross_entropy(logits, target, reduction="sum", ignore_index=255)
    ours = summed / cross_entropy_denominator(target, 255, "all_pixels")
    assert float(ours) == pytest.approx(float(mmseg), rel=1e-6)
    labelled = summed / cross_entropy_denominator(target, 255, "labelled_pixels")
    assert float(labelled) == pytest.approx(float(F.cross_entropy(logits, target, ignore_index=255)), rel=1e-6)
    assert float(ours) < float(labelled)  # 2 * 42 pixels, 21 + 12 ignored: a smaller loss


def test_head_losses_use_the_configured_average():
    from siglip2_dense.training.step_losses import head_losses, loss_normaliser

    config = load_config(ROOT / "configs" / "synthetic_linear_tiny.yaml",
                         ["model.backbone=x", "data.root=x", "train.loss_average=all_pixels"])

    class One:
        world_size, device = 1, torch.device("cpu")

    target = torch.full((2, 4, 4), 255)
    target[:, :2] = 1
    normaliser = loss_normaliser(config, [{"target": target}], One())
    assert normaliser == 32.0
    logits = torch.randn(2, 3, 4, 4)
    loss = head_losses([logits], target, config, normaliser, One())[0]
    assert float(loss) == pytest.approx(float(F.cross_entropy(logits, target, reduction="none",
                                                              ignore_index=255).mean()), rel=1e-6)


def _features(channels: int, height: int = 40, width: int = 40) -> DenseFeatures:
    torch.manual_seed(1)
    return DenseFeatures(maps=[torch.randn(2, channels, height, width)], mask=torch.ones(2, height, width, dtype=torch.bool),
                         grid_sizes=torch.tensor([[height, width]] * 2), pooled=None)


@pytest.mark.parametrize("name,args", [("linear", {"num_classes": 150}), ("bins", {})])
def test_classifier_init_is_normal_001_with_zero_bias_and_default_without(name, args):
    torch.manual_seed(0)
    head = build_head(name, in_channels=[768], init_std=0.01, **args)
    weight = head.classifier.weight.detach()
    assert float(weight.std()) == pytest.approx(0.01, rel=0.02) and abs(float(weight.mean())) < 1e-4
    assert torch.count_nonzero(head.classifier.bias) == 0
    default = build_head(name, in_channels=[768], **args)  # PyTorch's kaiming-uniform: bound 1/sqrt(768)
    assert float(default.classifier.weight.detach().abs().max()) <= 1 / math.sqrt(768) + 1e-7
    assert torch.count_nonzero(default.classifier.bias) > 0
    with pytest.raises(Exception, match="init_std"):
        build_head(name, in_channels=[768], init_std=-1.0, **args)


def test_a_head_saved_before_the_new_options_rebuilds_the_same(tmp_path):
    head = build_head("linear", in_channels=[8], num_classes=3)
    saved = {k: v for k, v in head.config.items() if k not in ("dropout_before_norm", "init_std")}
    rebuilt = build_head("linear", **saved)
    rebuilt.load_state_dict(head.state_dict())  # strict: the same modules and parameters
    features = _features(8, 4, 4)
    head.eval()
    rebuilt.eval()
    assert torch.equal(head(features), rebuilt(features))


def test_dropout_before_norm_is_dinov3s_order_in_training_and_off_in_eval():
    head = build_head("linear", in_channels=[16], num_classes=5, dropout_before_norm=0.1, init_std=0.01)
    features = _features(16, 6, 6)
    head.train()
    torch.manual_seed(7)
    ours = head(features)
    # the reference forward (linear_head.py:80-86): dropout -> batchnorm -> conv, same dropout draw
    reference_bn = torch.nn.BatchNorm2d(16)
    reference_bn.load_state_dict({k: v for k, v in head.norm.state_dict().items()}, strict=False)
    torch.manual_seed(7)
    dropped = torch.nn.functional.dropout2d(features.maps[0], 0.1, training=True)
    expected = head.classifier(F.batch_norm(dropped, None, None, head.norm.weight, head.norm.bias, training=True,
                                            eps=head.norm.eps))
    assert torch.allclose(ours, expected, atol=1e-5)
    head.eval()
    assert torch.allclose(head(features), head.classifier(head.norm(features.maps[0], features.mask)), atol=1e-6)


def test_new_keys_refuse_meaningless_values_naming_key_and_choices():
    base = ROOT / "configs" / "synthetic_linear_tiny.yaml"
    for override, key in (("train.schedule=onecycle", "train.schedule"), ("train.beta1_schedule=yes", "beta1_schedule"),
                          ("train.loss_average=mean", "train.loss_average"),
                          ("train.reported_checkpoint=last", "train.reported_checkpoint"),
                          ("data.photometric_form=v3", "data.photometric_form"),
                          ("train.beta1_range=[0.95,0.85]", "train.beta1_range")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_config(base, ["model.backbone=x", "data.root=x", override])
    with pytest.raises(ConfigError, match="min_lr_ratio"):
        load_config(base, ["model.backbone=x", "data.root=x", "train.schedule=warmup_one_cycle_cosine",
                           "train.min_lr_ratio=0.1"])
    with pytest.raises(ConfigError, match="pad_after_normalise"):
        load_config(base, ["model.backbone=x", "data.root=x", "data.pad_after_normalise=true",
                           "train.feature_cache=true"])


# --- DINOv3's hue and saturation ------------------------------------------------------------------


def _reference_adjust_hue(img: np.ndarray, factor: float) -> np.ndarray:
    """torchvision adjust_hue on uint8, restated with colorsys: rgb/255 -> hsv, h = (h + f) mod 1 -> rgb -> *255."""
    import colorsys

    out = np.empty_like(img)
    for index in np.ndindex(img.shape[:2]):
        h, s, v = colorsys.rgb_to_hsv(*(img[index] / 255.0))
        out[index] = np.array(colorsys.hsv_to_rgb((h + factor) % 1.0, s, v)) * 255.0
    return out


def test_dinov3_hue_is_a_rotation_of_the_whole_circle_and_mmseg_stays_default():
    from siglip2_dense.data.augmentations import PhotoMetricDistortion

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    transform = PhotoMetricDistortion(form="dinov3")
    for factor in (-0.5, -0.2, 0.3, 0.45):
        ours = transform.apply(image, brightness=None, contrast_first=True, contrast=None, saturation=None, hue=factor)
        reference = _reference_adjust_hue(image, factor)
        assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1  # uint8 rounding of the same floats
    transform.set_random_seed(3)
    hues = [transform.get_params()["hue"] for _ in range(400)]
    drawn = [h for h in hues if h is not None]
    assert all(-0.5 <= h <= 0.5 for h in drawn) and max(drawn) > 0.4 and min(drawn) < -0.4
    assert any(abs(h - round(h)) > 1e-3 for h in drawn)  # real-valued, not mmseg's integer degrees
    assert PhotoMetricDistortion().form == "mmseg"


def test_dinov3_saturation_is_torchvisions_grey_blend():
    from siglip2_dense.data.augmentations import PhotoMetricDistortion

    image = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    ours = PhotoMetricDistortion(form="dinov3").apply(image, brightness=None, contrast_first=True, contrast=None,
                                                      saturation=1.4, hue=None)
    grey = (0.2989 * image[..., 0] + 0.587 * image[..., 1] + 0.114 * image[..., 2]).astype(np.float64)
    grey = np.floor(grey)[..., None]  # torchvision rgb_to_grayscale on uint8 truncates
    reference = np.clip(1.4 * image + (1 - 1.4) * grey, 0, 255)
    assert np.abs(ours.astype(float) - reference).max() < 1.0 + 1e-9  # uint8 truncation of the same blend


# --- padding after normalisation, and the final model ---------------------------------------------


@pytest.mark.parametrize("tower", ["naflex", "fixres"])
def test_padding_after_normalisation_is_exactly_zero_in_the_backbone_input(tower, tiny_naflex_dir, tiny_fixres_dir):
    from siglip2_dense import load_backbone
    from siglip2_dense.data.transforms import build_segmentation_train_transform
    from siglip2_dense.training.engine import collate_views, preprocess_images

    backbone = load_backbone(str(tiny_naflex_dir if tower == "naflex" else tiny_fixres_dir))
    config = load_config(ROOT / "configs" / "synthetic_linear_tiny.yaml",
                         ["model.backbone=x", "data.root=x", "data.pad_after_normalise=true"]
                         + ([] if tower == "naflex" else ["model.max_num_patches=null"]))
    transform = build_segmentation_train_transform((32, 32), short_side=16, ratio_range=(1.0, 1.0),
                                                   photometric=False, pad_after_normalise=True, seed=0)
    rng = np.random.default_rng(0)
    items = [transform({"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
                        "mask": rng.integers(0, 5, (h, w), dtype=np.uint8)}) for h, w in ((16, 24), (20, 16))]
    assert [item["valid_size"] for item in items] == [(16, 24), (20, 16)]  # short side already 16: no resize, no crop
    batch = collate_views(items, "mask")
    inputs = preprocess_images(backbone, batch, config)
    # the reference: normalise the real crop ((x / 255 - mean) / std), pad with 0, patchify as transformers
    processor = backbone.image_processor
    mean = torch.tensor(processor.image_mean).view(3, 1, 1)
    std = torch.tensor(processor.image_std).view(3, 1, 1)
    for b, item in enumerate(items):
        h, w = item["valid_size"]
        real = torch.from_numpy(item["image"][:h, :w]).permute(2, 0, 1).float() / 255.0
        canvas = torch.zeros(3, 32, 32)
        canvas[:, :h, :w] = (real - mean) / std
        if tower == "naflex":
            expected = canvas.reshape(3, 8, 4, 8, 4).permute(1, 3, 2, 4, 0).reshape(64, 48)
            got = inputs["pixel_values"][b]
        else:
            expected, got = canvas, inputs["pixel_values"][b]
        assert torch.allclose(got, expected, atol=1e-6)
        assert float(got.abs().max()) > 0.1


def test_a_rescaling_naflex_budget_is_refused_with_pad_after_normalise(tiny_naflex_dir):
    from siglip2_dense import load_backbone
    from siglip2_dense.training.normalised_padding import zero_padded_pixels

    backbone = load_backbone(str(tiny_naflex_dir))
    inputs = backbone.preprocess([np.zeros((32, 32, 3), np.uint8)], max_num_patches=16)
    with pytest.raises(ConfigError, match="max_num_patches to 64"):
        zero_padded_pixels(inputs, torch.tensor([[20, 20]]), (32, 32), 4, True)


def test_final_model_is_written_instead_of_best(tiny_naflex_dir, tmp_path):
    from siglip2_dense.data import write_synthetic
    from siglip2_dense.evaluation.checkpoint import load_model_for_evaluation
    from siglip2_dense.training.engine import train

    root = write_synthetic("ade20k", tmp_path / "data", num=8, seed=0, size=(64, 64))
    config = load_config(ROOT / "configs" / "synthetic_linear_tiny.yaml",
                         [f"model.backbone={tiny_naflex_dir}", f"data.root={root}", f"train.output_dir={tmp_path / 'run'}",
                          "train.iterations=4", "train.val_every=2", "train.checkpoint_every=4",
                          "train.reported_checkpoint=final", "train.loss_average=all_pixels",
                          "train.weight_decay_on_norms_and_biases=true", "head.args.init_std=0.01",
                          "data.pad_after_normalise=true", "train.schedule=warmup_one_cycle_cosine",
                          "train.final_div_factor=.inf", "train.min_lr_ratio=0.0"])
    result = train(config)
    assert not (tmp_path / "run" / "best").exists()
    assert result["final"]["step"] == 4 and result["best"] is not None
    model = load_model_for_evaluation(tmp_path / "run" / "final", "cpu")
    saved = load_model_for_evaluation(tmp_path / "run" / "checkpoints" / "step_00000004", "cpu")
    for key, value in model.head.state_dict().items():
        assert torch.equal(value, saved.head.state_dict()[key])  # the final model is the step-4 model
