"""Gradient accumulation keeps its promise: an accumulated step equals one step with the whole batch,
BatchNorm statistics and running statistics included (linear and bins heads), and says where it cannot."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from siglip2_dense.backbone.features import DenseFeatures, grid_mask
from siglip2_dense.config import load_config
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.heads import build_head
from siglip2_dense.training.accumulation import (
    accumulation_caveats,
    collect_step_statistics,
    pool_step_statistics,
    release_step_statistics,
)
from siglip2_dense.training.engine import read_log, train
from siglip2_dense.training.sync_batch_norm import convert_to_sync_batch_norm

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"
CHANNELS, CLASSES = [6, 6], 5
# three micro-batches of different sizes and padding, on one padded canvas of 5 x 6 cells
MICRO_GRIDS = [[[5, 6], [3, 4]], [[4, 6]], [[5, 2], [2, 6], [5, 5]]]


def micro_batch(grid_sizes: list[list[int]], seed: int, with_pooled: bool = True) -> DenseFeatures:
    """Random features on the padded canvas; padded cells hold noise (heads must ignore it)."""
    generator = torch.Generator().manual_seed(seed)
    sizes = torch.tensor(grid_sizes)
    mask = grid_mask(sizes, 5, 6)
    maps = [torch.randn(len(grid_sizes), c, 5, 6, generator=generator) * (1 + i) + i for i, c in enumerate(CHANNELS)]
    pooled = torch.randn(len(grid_sizes), CHANNELS[-1], generator=generator) if with_pooled else None
    return DenseFeatures(maps=maps, mask=mask, grid_sizes=sizes, pooled=pooled)


def whole_batch(parts: list[DenseFeatures]) -> DenseFeatures:
    return DenseFeatures(maps=[torch.cat([p.maps[i] for p in parts]) for i in range(len(CHANNELS))],
                         mask=torch.cat([p.mask for p in parts]), grid_sizes=torch.cat([p.grid_sizes for p in parts]),
                         pooled=torch.cat([p.pooled for p in parts]))


def targets(parts: list[DenseFeatures], seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, CLASSES, p.mask.shape, generator=generator) for p in parts]


def summed_loss(head_name: str, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A loss that is a sum over real cells (cross-entropy, or squared log depth), as the loop's losses are."""
    if head_name == "linear":
        return torch.nn.functional.cross_entropy(output, target, reduction="none")[mask].sum()
    return (output[:, 0][mask].log() - (target[mask].float() + 1.0).log()).square().sum()


HEADS = {
    "linear": dict(num_classes=CLASSES, use_pooled=True),
    "bins": dict(min_depth=0.5, max_depth=8.0, num_bins=12, use_pooled=True),
}


@pytest.mark.parametrize("head_name", list(HEADS))
def test_accumulated_micro_batches_give_the_whole_batch_gradient_and_running_statistics(head_name):
    parts = [micro_batch(g, seed) for seed, g in enumerate(MICRO_GRIDS)]
    labels = targets(parts, seed=9)
    cells = float(sum(p.mask.sum() for p in parts))
    torch.manual_seed(0)
    reference = build_head(head_name, in_channels=CHANNELS, **HEADS[head_name]).train()
    accumulated = convert_to_sync_batch_norm(copy.deepcopy(reference)).train()

    whole = whole_batch(parts)
    (summed_loss(head_name, reference(whole), torch.cat(labels), whole.mask) / cells).backward()

    grid = HeadGrid(torch.nn.Identity(), [accumulated], [[0, 1]])
    with torch.no_grad():
        for part in parts:
            collect_step_statistics(grid, part)
    pool_step_statistics(grid)
    for part, label in zip(parts, labels):
        (summed_loss(head_name, accumulated(part), label, part.mask) / cells).backward()
    release_step_statistics(grid)

    for (name, want), got in zip(reference.named_parameters(), accumulated.parameters()):
        assert want.grad.abs().max() > 1e-4, name  # a gradient that is there to compare
        torch.testing.assert_close(got.grad, want.grad, rtol=0, atol=1e-6, msg=name)
    want_state, got_state = reference.state_dict(), accumulated.state_dict()
    for key in ("norm.running_mean", "norm.running_var"):
        torch.testing.assert_close(got_state[key], want_state[key], rtol=0, atol=1e-6, msg=key)
    assert int(got_state["norm.num_batches_tracked"]) == int(want_state["norm.num_batches_tracked"]) == 1


def test_a_micro_batch_loss_gets_the_whole_batch_gradient_with_respect_to_its_own_features():
    """What a tuned backbone receives: d L_j / d x_j with the statistics of the whole batch."""
    parts = [micro_batch(g, seed, with_pooled=False) for seed, g in enumerate(MICRO_GRIDS)]
    labels = targets(parts, seed=4)
    torch.manual_seed(1)
    reference = build_head("linear", in_channels=CHANNELS, num_classes=CLASSES).train()
    accumulated = convert_to_sync_batch_norm(copy.deepcopy(reference)).train()
    grid = HeadGrid(torch.nn.Identity(), [accumulated], [[0, 1]])
    with torch.no_grad():
        for part in parts:
            collect_step_statistics(grid, part)
    pool_step_statistics(grid)
    for j, (part, label) in enumerate(zip(parts, labels)):
        maps = [m.clone().requires_grad_(True) for m in part.maps]
        own = DenseFeatures(maps=maps, mask=part.mask, grid_sizes=part.grid_sizes, pooled=None)
        got = torch.autograd.grad(summed_loss("linear", accumulated(own), label, part.mask), maps)

        whole_maps = [torch.cat([p.maps[i] for p in parts]).requires_grad_(True) for i in range(len(CHANNELS))]
        whole = DenseFeatures(maps=whole_maps, mask=torch.cat([p.mask for p in parts]),
                              grid_sizes=torch.cat([p.grid_sizes for p in parts]), pooled=None)
        start = sum(len(p.grid_sizes) for p in parts[:j])
        rows = slice(start, start + len(part.grid_sizes))
        output = copy.deepcopy(reference)(whole)[rows]
        want = torch.autograd.grad(summed_loss("linear", output, label, part.mask), whole_maps)
        for got_map, want_map in zip(got, want):
            torch.testing.assert_close(got_map, want_map[rows], rtol=0, atol=1e-6)
    release_step_statistics(grid)


def test_caveats_name_batch_norm_after_trained_layers_and_nothing_for_a_frozen_linear_probe():
    frozen = torch.nn.Identity()
    linear = convert_to_sync_batch_norm(build_head("linear", in_channels=CHANNELS, num_classes=3))
    assert accumulation_caveats(HeadGrid(frozen, [linear], [[0, 1]]), "segmentation") == []
    dpt = convert_to_sync_batch_norm(build_head("dpt", in_channels=[6] * 4, num_classes=3))
    (caveat,) = accumulation_caveats(HeadGrid(frozen, [dpt], [[0, 1, 2, 3]]), "segmentation")
    assert caveat.startswith("head 0 (DPTHead) has BatchNorm after trained layers (fusion.0.refine_unit.norm1")
    assert "output_norm" in caveat and "use_batchnorm: false" in caveat
    no_norm = convert_to_sync_batch_norm(build_head("dpt", in_channels=[6] * 4, num_classes=3, use_batchnorm=False))
    assert accumulation_caveats(HeadGrid(frozen, [no_norm], [[0, 1, 2, 3]]), "segmentation") == []
    (depth,) = accumulation_caveats(HeadGrid(frozen, [linear], [[0, 1]]), "depth")
    assert "depth losses pool over the batch" in depth


# --- the training loop ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    from siglip2_dense.data import write_synthetic

    return write_synthetic("ade20k", tmp_path_factory.mktemp("synthetic-ade"), num=16, seed=0, size=(64, 64))


def run(checkpoint: Path, data_root: Path, out: Path, accumulation: int, extra: list[str] = ()) -> Path:
    args = [f"model.backbone={checkpoint}", f"data.root={data_root}", f"train.output_dir={out}",
            "train.iterations=2", "train.batch_size=8", f"train.grad_accum_steps={accumulation}",
            "train.log_every=1", "train.val_every=0", "train.checkpoint_every=2", "train.warmup_iterations=0",
            "train.lr=1e-2", *extra]
    train(load_config(LINEAR, args))
    return out


def test_two_accumulated_micro_batches_train_as_the_doubled_batch(tiny_naflex_dir, ade_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="siglip2_dense.training.engine"):
        accumulated = run(tiny_naflex_dir, ade_root, tmp_path / "accumulated", 2)
    doubled = run(tiny_naflex_dir, ade_root, tmp_path / "doubled", 1)
    assert not caplog.records  # a frozen backbone and the linear head: exact, nothing to warn about

    losses = [[r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r] for out in (accumulated, doubled)]
    assert len(losses[0]) == 2
    assert losses[0] == pytest.approx(losses[1], rel=0, abs=1e-6)
    got, want = (load_file(str(out / "checkpoints" / "step_00000002" / "model.safetensors"))
                 for out in (accumulated, doubled))
    head_keys = [k for k in want if k.startswith("heads.")]
    assert sorted(got) == sorted(want) and len(head_keys) == 7
    assert int(got["heads.0.norm.num_batches_tracked"]) == int(want["heads.0.norm.num_batches_tracked"]) == 2
    for key in head_keys:
        torch.testing.assert_close(got[key].double(), want[key].double(), rtol=0, atol=1e-6, msg=key)


def test_a_tuned_backbone_logs_one_warning_at_start(tiny_naflex_dir, ade_root, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="siglip2_dense.training.engine"):
        run(tiny_naflex_dir, ade_root, tmp_path / "tuned", 2, ["model.tune_last_blocks=1", "train.iterations=1",
                                                                 "train.checkpoint_every=1"])
    (record,) = caplog.records
    message = record.getMessage()
    assert message.startswith("train.grad_accum_steps=2 is not exactly one step with the whole batch")
    assert "their gradient into the backbone is taken within each micro-batch" in message
