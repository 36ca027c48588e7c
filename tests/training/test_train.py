"""Training: a few iterations with validation, exact kill-and-resume, 2-process DDP = 1 process, and the
pieces (schedule, parameter groups, data order, checkpoint files). Slow: the loop learns the synthetic tasks."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_CHECKPOINT
from safetensors.torch import load_file

from siglip2_dense import DenseModel
from siglip2_dense.config import load_config
from siglip2_dense.data.order import SeededViews, StepBatchSampler, derived_seed
from siglip2_dense.errors import ConfigError
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.training.checkpoint import (
    is_complete,
    join_optimizer_state,
    latest_checkpoint,
    list_checkpoints,
    split_optimizer_state,
)
from siglip2_dense.training.engine import read_log, train
from siglip2_dense.training.optim import HeadGroup, build_optimizer, lr_factor
from siglip2_dense.training.validation import evaluate

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"
BINS = ROOT / "configs" / "synthetic_bins_tiny.yaml"
# a tuned last block (taps without the final layernorm, whose scale and shift the head's BatchNorm
# would undo), two accumulation steps, validation and checkpoints along the way
REFERENCE = ["model.tune_last_blocks=1", "model.norm=false", "train.iterations=12", "train.batch_size=4",
             "train.grad_accum_steps=2", "train.lr=1e-2", "train.val_every=6", "train.checkpoint_every=4",
             "train.log_every=1", "train.warmup_iterations=2"]
# slow runs. Segmentation: the shipped demo backbone (a 4-block SigLIP2 of width 128 pretrained on the
# synthetic world, tests/conftest.DEMO_CHECKPOINT) fully tuned on whole 128x128 scenes; depth: a small
# NaFlex tower (width 64, 4 blocks) tuned from random weights
SLOW_SEGMENTATION = ["model.tune_last_blocks=-1", "model.max_num_patches=256", "data.crop_size=[128,128]",
                     "data.short_side=128", "data.scale_range=[0.75,1.5]", "eval.mode=whole",
                     "train.iterations=600", "train.batch_size=16", "train.lr=1e-3",
                     "train.backbone_lr_multiplier=0.1", "train.warmup_iterations=50", "train.val_every=300",
                     "train.checkpoint_every=600", "train.log_every=100"]
SLOW_DEPTH = ["model.tune_last_blocks=-1", "model.max_num_patches=192", "data.crop_size=[48,64]",
              "train.iterations=600", "train.batch_size=16", "train.lr=1e-3", "train.backbone_lr_multiplier=1.0",
              "train.warmup_iterations=50", "train.val_every=300", "train.checkpoint_every=600", "train.log_every=50"]


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    from siglip2_dense.data import write_synthetic

    return write_synthetic("ade20k", tmp_path_factory.mktemp("synthetic-ade"), num=16, seed=0, size=(64, 64))


def overrides(checkpoint: Path, data_root: Path, out: Path, extra: list[str] = ()) -> list[str]:
    return [f"model.backbone={checkpoint}", f"data.root={data_root}", f"train.output_dir={out}", *REFERENCE, *extra]


@pytest.fixture(scope="module")
def reference_run(tiny_naflex_dir, ade_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference-run")
    config = load_config(LINEAR, overrides(tiny_naflex_dir, ade_root, out))
    result = train(config)
    return config, out, result


def train_records(out: Path) -> list[dict]:
    return [r for r in read_log(out / "log.jsonl") if "loss" in r]


# --- a few iterations of train + eval ----------------------------------------------------------


def test_run_writes_log_config_checkpoint_and_a_loadable_best_model(reference_run):
    config, out, result = reference_run
    records = train_records(out)
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(math.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in records)
    # the logged lr is the one used by the next step: lr * factor(step)
    for record in records:
        assert record["lr"] == pytest.approx(config.train.lr * lr_factor(record["step"], config.train), rel=1e-9)
    validations = [r for r in read_log(out / "log.jsonl") if "metrics" in r]
    assert [r["step"] for r in validations] == [6, 12]
    assert set(validations[0]["metrics"][0]) >= {"mIoU", "mAcc", "aAcc"}
    assert load_config(out / "config.yaml") == config
    assert [p.name for p in list_checkpoints(out)] == ["step_00000012"]  # keep_checkpoints=1
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000012"]

    best = json.loads((out / "best" / "metrics.json").read_text())
    assert best == result["best"] and best["metric"] == "mIoU"
    assert (out / "best" / "backbone.safetensors").is_file()  # the tuned block is part of the model
    model = DenseModel.from_pretrained(out / "best")
    grid = HeadGrid(model.backbone, [model.head], [list(range(len(model.backbone.layers)))])
    from siglip2_dense.build import build_dataset, build_eval_transform

    val = build_dataset(config, config.data.val_split, build_eval_transform(config))
    again = evaluate(grid, val, config, torch.device("cpu"))[0]
    assert again["mIoU"] == pytest.approx(best["metrics"]["mIoU"], abs=1e-9)


def test_loss_goes_down_on_the_training_set(reference_run):
    _, out, _ = reference_run
    losses = [r["loss"] for r in train_records(out)]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


# --- kill -9 and resume -------------------------------------------------------------------------


def test_killed_and_resumed_run_ends_with_identical_weights(reference_run, tiny_naflex_dir, ade_root, tmp_path):
    config, reference_out, _ = reference_run
    out = tmp_path / "killed"
    args = overrides(tiny_naflex_dir, ade_root, out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(LINEAR), *args],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while latest_checkpoint(out) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = latest_checkpoint(out)
    assert killed_at is not None and killed_at.name != "step_00000012"

    train(load_config(LINEAR, args + ["train.resume=auto"]))

    final, expected = out / "checkpoints" / "step_00000012", reference_out / "checkpoints" / "step_00000012"
    for name in ("model.safetensors", "optimizer.safetensors"):
        got, want = load_file(str(final / name)), load_file(str(expected / name))
        assert sorted(got) == sorted(want)
        assert all(torch.equal(got[k], want[k]) for k in want), name
    assert [r["loss"] for r in train_records(out)] == [r["loss"] for r in train_records(reference_out)]
    starts = [r for r in read_log(out / "log.jsonl") if r.get("event") == "start"]
    assert starts[-1]["resumed_from"] == str(killed_at)


# --- DDP -------------------------------------------------------------------------------------------


def test_two_processes_follow_the_one_process_loss_curve(reference_run, tiny_naflex_dir, ade_root, tmp_path):
    _, reference_out, reference_result = reference_run
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tools" / "train.py"), "--config", str(LINEAR), *overrides(tiny_naflex_dir, ade_root, out)]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    two = [r["loss"] for r in train_records(out)]
    one = [r["loss"] for r in train_records(reference_out)]
    assert len(two) == len(one) == 12
    np.testing.assert_allclose(two, one, rtol=1e-4)
    got = load_file(str(out / "checkpoints" / "step_00000012" / "model.safetensors"))
    want = load_file(str(reference_out / "checkpoints" / "step_00000012" / "model.safetensors"))
    # Two parameters have an exactly zero gradient by symmetry: attention is invariant to the key bias,
    # and the head's BatchNorm removes any per-channel constant added at the end of the last block
    # (its MLP's output bias). Their gradient is rounding noise, which AdamW normalises into full-size
    # steps of arbitrary sign, different for every summation order; the BatchNorm running mean tracks
    # that drift. Every other parameter and buffer must agree.
    symmetric = ("self_attn.k_proj.bias", "layers.2.mlp.fc2.bias", "norm.running_mean")
    compared = [key for key in want if not key.endswith(symmetric)]
    assert len(compared) == len(want) - 3
    for key in compared:
        torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-5, msg=key)
    best = json.loads((out / "best" / "metrics.json").read_text())
    assert best["value"] == pytest.approx(reference_result["best"]["value"], abs=1e-3)


# --- the pieces ------------------------------------------------------------------------------------


def test_lr_schedule_warms_up_linearly_then_decays():
    config = load_config(LINEAR, ["model.backbone=x", "data.root=y", "train.iterations=100",
                                  "train.warmup_iterations=10", "train.warmup_ratio=0.01"]).train
    poly = [lr_factor(t, config) for t in range(101)]
    assert poly[0] == pytest.approx(0.01 * 1.0) and poly[100] == 0.0
    assert poly[5] == pytest.approx((1 - 0.05) * (1 - 0.5 * 0.99))  # warm-up on top of the poly decay (mmcv)
    assert poly[50] == pytest.approx(0.5)
    config.schedule, config.min_lr_ratio = "cosine", 0.1
    assert lr_factor(50, config) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, config) == pytest.approx(0.1)


def test_parameter_groups_exclude_norms_biases_and_position_tables_from_decay():
    head = torch.nn.Sequential(torch.nn.Conv2d(4, 3, 1), torch.nn.BatchNorm2d(3))
    backbone = torch.nn.Module()
    backbone.position_embedding = torch.nn.Embedding(4, 2)
    backbone.proj = torch.nn.Linear(2, 2)
    config = load_config(LINEAR, ["model.backbone=x", "data.root=y", "train.lr=0.1", "train.backbone_lr_multiplier=0.5",
                                  "train.weight_decay=0.05"]).train
    optimizer = build_optimizer([HeadGroup(list(head.named_parameters()), 0.1)], backbone, config)
    groups = {g["name"]: (g["lr"], g["weight_decay"], len(g["params"])) for g in optimizer.param_groups}
    assert groups == {"head0.decay": (0.1, 0.05, 1), "head0.no_decay": (0.1, 0.0, 3),
                      "backbone.decay": (0.05, 0.05, 1), "backbone.no_decay": (0.05, 0.0, 2)}


def test_data_order_depends_only_on_seed_and_step_and_processes_split_each_micro_batch():
    def keys(rank, world, start=0):
        sampler = StepBatchSampler(10, 4, seed=7, start_step=start, end_step=6, rank=rank, world_size=world,
                                   grad_accum_steps=2)
        return list(sampler)

    one = keys(0, 1)
    assert len(one) == 12 and all(len(b) == 2 for b in one)
    assert keys(0, 1, start=3) == one[6:]  # resuming at step 3 continues the same order
    two = [keys(0, 2), keys(1, 2)]
    assert [a + b for a, b in zip(*two)] == one  # micro-batch m of rank 0 + rank 1 = 1-process micro-batch m
    epochs = [[e for _, e in batch] for batch in one]
    assert epochs[:4] == [[0, 0]] * 4 and epochs[4:8] == [[1, 1]] * 4  # 2 full batches of 4 per epoch of 10
    first_epoch = [i for batch in one[:4] for i, _ in batch]
    assert len(set(first_epoch)) == 8
    assert [i for batch in keys(0, 1) for i, _ in batch] != [i for batch in StepBatchSampler(
        10, 4, seed=8, start_step=0, end_step=6, grad_accum_steps=2) for i, _ in batch]


def test_seeded_views_give_the_same_item_for_the_same_key(ade_root):
    from siglip2_dense.data import ADE20KDataset, build_segmentation_train_transform

    dataset = ADE20KDataset(ade_root, "training")
    views = SeededViews(dataset, build_segmentation_train_transform(crop_size=(32, 32), short_side=64), seed=3)
    a, b, c = views[(2, 0)], views[(5, 0)], views[(2, 0)]
    assert np.array_equal(a["image"], c["image"]) and np.array_equal(a["mask"], c["mask"])
    assert not np.array_equal(views[(2, 1)]["image"], a["image"])  # another epoch, another augmentation
    assert a["image"].shape == b["image"].shape == (32, 32, 3)
    fixed = SeededViews(dataset, views.transform, seed=3, views=2)
    assert len(fixed) == 2 * len(dataset)
    assert np.array_equal(fixed[(1, 0)]["image"], fixed[(1, 9)]["image"])  # fixed views ignore the epoch
    assert derived_seed(3, 0, 0, 2) != derived_seed(3, 0, 2, 0)


def test_optimizer_state_round_trips_through_safetensors_and_json():
    parameter = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([{"params": [parameter], "lr": 0.1, "name": "g"}])
    parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    tensors, other = split_optimizer_state(optimizer.state_dict())
    json.dumps(other)
    assert set(tensors) == {"state.0.step", "state.0.exp_avg", "state.0.exp_avg_sq"}
    rebuilt = join_optimizer_state(tensors, json.loads(json.dumps(other)))
    fresh = torch.optim.AdamW([{"params": [torch.nn.Parameter(parameter.detach().clone())], "lr": 0.1, "name": "g"}])
    fresh.load_state_dict(rebuilt)
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_incomplete_checkpoints_are_never_resumed_from(tmp_path):
    root = tmp_path / "checkpoints"
    for name in ("step_00000004", "step_00000008", ".step_00000012.tmp-99"):
        (root / name).mkdir(parents=True)
        (root / name / "model.safetensors").write_bytes(b"12345")
    for name in ("step_00000004", "step_00000008"):
        (root / name / "manifest.json").write_text(json.dumps({"files": {"model.safetensors": 5}}))
    (root / "step_00000008" / "model.safetensors").write_bytes(b"123")  # truncated after the manifest
    assert is_complete(root / "step_00000004") and not is_complete(root / "step_00000008")
    assert latest_checkpoint(tmp_path) == root / "step_00000004"


def test_a_grid_of_heads_needs_a_frozen_backbone(tiny_naflex_dir, ade_root, tmp_path):
    config = load_config(LINEAR, overrides(tiny_naflex_dir, ade_root, tmp_path, ["train.lr_grid=[1e-3,1e-2]"]))
    with pytest.raises(ConfigError, match="frozen backbone"):
        train(config)


# --- slow: the loop learns ------------------------------------------------------------------------


def small_naflex_tower(directory: Path, patch_size: int, num_patches: int) -> Path:
    """A NaFlex vision tower of width 64 and 4 blocks with random weights, saved as a checkpoint."""
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    torch.manual_seed(0)
    config = Siglip2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                                 patch_size=patch_size, num_patches=num_patches)
    Siglip2VisionModel(config).save_pretrained(directory)
    Siglip2ImageProcessor(patch_size=patch_size, max_num_patches=num_patches).save_pretrained(directory)
    return directory


@pytest.mark.slow
def test_tuned_tiny_backbone_learns_synthetic_segmentation(tmp_path):
    from siglip2_dense.data import write_synthetic

    root = write_synthetic("ade20k", tmp_path / "data", num=1000, seed=1, size=(128, 128))
    args = [f"model.backbone={DEMO_CHECKPOINT}", f"data.root={root}", f"train.output_dir={tmp_path / 'run'}",
            *SLOW_SEGMENTATION]
    start = time.perf_counter()
    result = train(load_config(LINEAR, args))
    minutes = (time.perf_counter() - start) / 60
    print(f"synthetic segmentation: mIoU {result['best']['value']:.1f} on held-out scenes in {minutes:.1f} min")
    assert result["best"]["value"] >= 50.0
    assert minutes < 10


@pytest.mark.slow
def test_tuned_tiny_backbone_learns_synthetic_depth(tmp_path):
    from siglip2_dense.data import write_synthetic

    root = write_synthetic("nyu-bts", tmp_path / "data", num=1000, seed=1, size=(48, 64))
    checkpoint = small_naflex_tower(tmp_path / "tower", patch_size=4, num_patches=256)
    args = [f"model.backbone={checkpoint}", f"data.root={root}", f"train.output_dir={tmp_path / 'run'}",
            *SLOW_DEPTH]
    start = time.perf_counter()
    result = train(load_config(BINS, args))
    minutes = (time.perf_counter() - start) / 60
    print(f"synthetic depth: abs_rel {result['best']['value']:.3f} on held-out scenes in {minutes:.1f} min")
    assert result["best"]["value"] <= 0.20
    assert minutes < 10
