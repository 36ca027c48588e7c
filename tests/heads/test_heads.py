"""Dense heads: shapes on NaFlex and FixRes grids, padding that never leaks into real cells,
masked BatchNorm statistics, the depth range, and the head registry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VISION, build_four_block_checkpoint, random_image, synthetic_features

import siglip2_dense as sd
from siglip2_dense import DenseFeatures
from siglip2_dense.errors import RequestError
from siglip2_dense.heads import HEADS, BinsDepthHead, DPTHead, LinearHead, build_head
from siglip2_dense.heads.depth_bins import DepthFromBins
from siglip2_dense.heads.dpt import default_fusion_width, default_reassemble_channels
from siglip2_dense.heads.masked_batch_norm import MaskedBatchNorm2d
from siglip2_dense.heads.padded_grid import upsample2x

WIDTH = TINY_VISION["hidden_size"]
HEAD_CASES = {
    "linear": dict(num_classes=5),
    "linear-last-pooled": dict(num_classes=5, layers="last", use_pooled=True),
    "bins": dict(num_bins=16, min_depth=0.5, max_depth=4.0),
    "bins-log": dict(num_bins=16, min_depth=0.5, max_depth=4.0, bin_spacing="log", use_pooled=True),
    "dpt-seg": dict(num_classes=5, readout="project"),
    "dpt-depth": dict(task="depth", num_bins=16, min_depth=0.5, max_depth=4.0, readout="add"),
}


def make_head(case: str, in_channels: list[int]) -> torch.nn.Module:
    name = case.split("-")[0]
    torch.manual_seed(0)
    return build_head(name, in_channels=in_channels, **HEAD_CASES[case])


@pytest.fixture(scope="session")
def four_block_naflex_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_four_block_checkpoint(tmp_path_factory.mktemp("four-block-naflex"), naflex=True)


@pytest.fixture(scope="module")
def naflex_backbone(four_block_naflex_dir):
    return sd.load_backbone(str(four_block_naflex_dir), layers=4)


@pytest.fixture(scope="module")
def naflex_images():
    rng = np.random.default_rng(3)
    return [random_image(rng, 40, 64), random_image(rng, 64, 20), random_image(rng, 30, 30)]


@pytest.fixture(scope="module")
def naflex_features(naflex_backbone, naflex_images):
    with torch.no_grad():
        return naflex_backbone(**naflex_backbone.preprocess(naflex_images))


def crop(features: DenseFeatures, index: int) -> DenseFeatures:
    """Image ``index`` of a padded batch, alone on its own ``(h, w)`` grid."""
    h, w = features.grid_sizes[index].tolist()
    return DenseFeatures(maps=[m[index : index + 1, :, :h, :w] for m in features.maps],
                         mask=features.mask[index : index + 1, :h, :w], grid_sizes=features.grid_sizes[index : index + 1],
                         pooled=features.pooled[index : index + 1])


def warm_up(head: torch.nn.Module, features: DenseFeatures) -> None:
    """One training forward so the BatchNorm running statistics are not the identity."""
    head.train()
    with torch.no_grad():
        head(features)
    head.eval()


# --- masked BatchNorm ---------------------------------------------------------------------------


def test_masked_batch_norm_equals_batch_norm_when_every_cell_is_real():
    x = torch.randn(3, 4, 5, 6) * 3 + 1
    reference, masked = torch.nn.BatchNorm2d(4), MaskedBatchNorm2d(4)
    for module in (reference, masked):
        torch.nn.init.normal_(module.weight)
        torch.nn.init.normal_(module.bias)
    masked.load_state_dict(reference.state_dict(), strict=True)
    out_ref, out = reference(x), masked(x, torch.ones(3, 5, 6, dtype=torch.bool))
    assert torch.allclose(out, out_ref, atol=1e-5)
    assert torch.allclose(masked.running_mean, reference.running_mean, atol=1e-6)
    assert torch.allclose(masked.running_var, reference.running_var, atol=1e-5)
    reference.eval(), masked.eval()
    assert torch.allclose(masked(x), reference(x), atol=1e-5)


def test_masked_batch_norm_training_statistics_come_from_real_cells_only():
    features = synthetic_features([[4, 6], [2, 3]], 4, 6, seed=0, padding_value=1000.0, channels=3)
    x, mask = features.maps[0], features.mask
    norm = MaskedBatchNorm2d(3, momentum=0.5)
    out = norm(x, mask)
    real = x.permute(0, 2, 3, 1)[mask]  # [N_real, C]
    assert real.shape[0] == 24 + 6
    mean, var = real.mean(0), real.var(0, unbiased=False)
    assert torch.allclose(norm.running_mean, 0.5 * mean, atol=1e-5)
    assert torch.allclose(norm.running_var, 0.5 + 0.5 * real.var(0, unbiased=True), atol=1e-4)
    expected = (real - mean) / torch.sqrt(var + norm.eps)
    assert torch.allclose(out.permute(0, 2, 3, 1)[mask], expected, atol=1e-5)
    assert out.permute(0, 2, 3, 1)[~mask].abs().max() == 0
    with pytest.raises(RequestError, match="more than one real cell"):
        norm(x[:1, :, :1, :1], mask[:1, :1, :1])


def test_upsample2x_on_odd_grids_equals_each_image_alone():
    features = synthetic_features([[7, 5], [4, 3]], 7, 5, seed=1, padding_value=50.0, channels=2)
    x, sizes = features.maps[0], features.grid_sizes
    out_sizes = [[13, 9], [8, 5]]  # 2h, 2w cropped to an odd target (image 0 rows and columns, image 1 columns)
    out = upsample2x(x, sizes, torch.tensor(out_sizes), (13, 9))
    assert out.shape == (2, 2, 13, 9)
    for index, ((h, w), (oh, ow)) in enumerate(zip(sizes.tolist(), out_sizes)):
        alone = torch.nn.functional.interpolate(x[index : index + 1, :, :h, :w], scale_factor=2, mode="bilinear")
        assert torch.allclose(out[index, :, :oh, :ow], alone[0, :, :oh, :ow], atol=1e-6)
        assert out[index, :, oh:].abs().sum() == 0 and out[index, :, :, ow:].abs().sum() == 0


# --- every head on real backbone grids -----------------------------------------------------------


@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_heads_on_mixed_naflex_grids_keep_shape_range_and_zero_padding(case, naflex_backbone, naflex_features):
    head = make_head(case, naflex_backbone.out_channels)
    warm_up(head, naflex_features)
    with torch.no_grad():
        out = head(naflex_features)
    sizes = naflex_features.grid_sizes.tolist()
    assert len({tuple(s) for s in sizes}) == 3
    channels = 1 if "bins" in case or "depth" in case else 5
    assert out.shape == (3, channels, *naflex_features.mask.shape[-2:])
    assert torch.isfinite(out).all()
    mask = naflex_features.mask[:, None].expand_as(out)
    assert out[~mask].abs().max() == 0
    if channels == 1:
        config = head.config
        assert out[mask].min() >= config["min_depth"] and out[mask].max() <= config["max_depth"]
        assert out[mask].std() > 0


@pytest.mark.parametrize("case", ["linear", "bins", "dpt-seg", "dpt-depth"])
def test_image_alone_equals_image_in_padded_naflex_batch(case, naflex_backbone, naflex_images, naflex_features):
    head = make_head(case, naflex_backbone.out_channels)
    warm_up(head, naflex_features)
    with torch.no_grad():
        batched = head(naflex_features)
        for index, image in enumerate(naflex_images):
            alone = head(naflex_backbone(**naflex_backbone.preprocess([image])))
            h, w = naflex_features.grid_sizes[index].tolist()
            assert alone.shape[-2:] == (h, w)
            assert (alone[0] - batched[index, :, :h, :w]).abs().max() <= 1e-5


@pytest.fixture(scope="module")
def fixres_backbone(tmp_path_factory):
    directory = build_four_block_checkpoint(tmp_path_factory.mktemp("four-block-fixres"), naflex=False)
    return sd.load_backbone(str(directory), layers=[0, 1, 2, 3])


@pytest.mark.parametrize("case", ["linear", "bins", "dpt-seg", "dpt-depth"])
def test_heads_on_fixres_grids(case, fixres_backbone):
    rng = np.random.default_rng(4)
    images = [random_image(rng, 32, 32), random_image(rng, 21, 14)]
    inputs = fixres_backbone.preprocess(images)
    with torch.no_grad():
        features = fixres_backbone(**inputs)
    assert inputs["spatial_shapes"].tolist() == [[8, 8], [6, 4]]
    head = make_head(case, fixres_backbone.out_channels)
    warm_up(head, features)
    with torch.no_grad():
        out = head(features)
        alone = [head(fixres_backbone(**fixres_backbone.preprocess([image]))) for image in images]
    assert out.shape[-2:] == (8, 8) and torch.isfinite(out).all()
    assert out[1, :, 6:].abs().max() == 0 and out[1, :, :, 4:].abs().max() == 0
    assert (alone[0][0] - out[0]).abs().max() <= 1e-5
    assert (alone[1][0] - out[1, :, :6, :4]).abs().max() <= 1e-5


# --- padding never reaches real cells (synthetic features, garbage in the padding) ---------------


@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_padding_content_changes_nothing_in_training_or_evaluation(case):
    grid = [[13, 9], [16, 12], [5, 11]]
    quiet, noisy = (synthetic_features(grid, 16, 12, seed=2, padding_value=v) for v in (0.0, 1e3))
    outputs = []
    for features in (quiet, noisy):
        head = make_head(case, [8] * 4)
        head.train()
        trained = head(features)
        head.eval()
        with torch.no_grad():
            outputs.append((trained.detach(), head(features), head.state_dict()))
    (train_a, eval_a, state_a), (train_b, eval_b, state_b) = outputs
    assert torch.equal(train_a, train_b) or (train_a - train_b).abs().max() <= 1e-5
    assert (eval_a - eval_b).abs().max() <= 1e-5
    running = [k for k in state_a if k.endswith("running_mean") or k.endswith("running_var")]
    assert running or case.startswith("dpt-depth")
    for key in running:
        assert torch.allclose(state_a[key], state_b[key], atol=1e-5), key


@pytest.mark.parametrize("case", ["linear", "bins", "dpt-seg", "dpt-depth"])
def test_odd_grid_alone_equals_grid_in_padded_batch(case):
    features = synthetic_features([[16, 12], [13, 9], [5, 11]], 16, 12, seed=3, padding_value=1e3)
    head = make_head(case, [8] * 4)
    warm_up(head, features)
    with torch.no_grad():
        batched = head(features)
        alone = head(crop(features, 1))
    assert alone.shape[-2:] == (13, 9)
    assert (alone[0] - batched[1, :, :13, :9]).abs().max() <= 1e-5
    assert batched[1, :, 13:].abs().max() == 0 and batched[1, :, :, 9:].abs().max() == 0


# --- head specifics ------------------------------------------------------------------------------


def test_linear_head_layers_and_pooled_embedding_are_used_as_configured():
    features = synthetic_features([[4, 5]], 4, 5, seed=4)
    last = LinearHead([8] * 4, num_classes=3, layers="last", use_pooled=True)
    every = LinearHead([8] * 4, num_classes=3)
    assert last.classifier.in_channels == 16 and every.classifier.in_channels == 32
    last.eval(), every.eval()
    changed_first = DenseFeatures([features.maps[0] + 1, *features.maps[1:]], features.mask, features.grid_sizes,
                                  features.pooled)
    changed_pooled = DenseFeatures(features.maps, features.mask, features.grid_sizes, features.pooled + 1)
    with torch.no_grad():
        assert torch.equal(last(features), last(changed_first))
        assert not torch.allclose(every(features), every(changed_first))
        assert not torch.allclose(last(features), last(changed_pooled))
    no_pooled = DenseFeatures(features.maps, features.mask, features.grid_sizes, None)
    with pytest.raises(RequestError, match="pooled"):
        last(no_pooled)
    with pytest.raises(RequestError, match="got 3 feature maps, built for 4"):
        every(DenseFeatures(features.maps[:3], features.mask, features.grid_sizes))


def test_depth_from_bins_hand_computed_and_never_leaves_its_range():
    three = DepthFromBins(1.0, 3.0, num_bins=3)
    logits = torch.tensor([1.0, -5.0, 0.0]).view(1, 3, 1, 1)
    # weights (1.1, 0.1, 0.1) / 1.3 over centres (1, 2, 3)
    assert three(logits).item() == pytest.approx((1.1 * 1 + 0.1 * 2 + 0.1 * 3) / 1.3, rel=1e-6)
    bins = DepthFromBins(1e-3, 10.0, num_bins=256)
    assert bins(torch.zeros(1, 256, 1, 1)).item() == pytest.approx((1e-3 + 10.0) / 2, rel=1e-5)
    big = torch.finfo(torch.float32).max
    extremes = [torch.full((256,), v) for v in (0.0, 1e4, -1e4, 1e30, -1e30, big, -big)]
    for position in (0, 255):
        one_hot = torch.full((256,), -big)
        one_hot[position] = big
        extremes.append(one_hot)
    logits = torch.stack(extremes)[:, :, None, None]
    depth = bins(logits)
    assert torch.isfinite(depth).all()
    assert depth.min() >= 1e-3 and depth.max() <= 10.0
    # equal logits of any size (negative ones are all 0 after relu) weigh every bin the same
    assert torch.allclose(depth[:7].flatten(), torch.full((7,), (1e-3 + 10.0) / 2), rtol=1e-5)
    assert depth[-2].item() == pytest.approx(1e-3, abs=1e-6) and depth[-1].item() == pytest.approx(10.0, rel=1e-6)
    log_bins = DepthFromBins(0.5, 8.0, num_bins=5, bin_spacing="log")
    assert torch.allclose(log_bins.centres, torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0]))


def test_bins_head_range_holds_for_huge_features():
    features = synthetic_features([[6, 7], [3, 2]], 6, 7, seed=5)
    head = BinsDepthHead([8] * 4, min_depth=0.25, max_depth=2.0, num_bins=32)
    torch.nn.init.normal_(head.classifier.weight, std=1e3)
    head.eval()
    for magnitude in (1.0, 1e6, 1e15):
        huge = DenseFeatures([m * magnitude for m in features.maps], features.mask, features.grid_sizes)
        with torch.no_grad():
            depth = head(huge)[features.mask[:, None]]
        assert torch.isfinite(depth).all() and depth.min() >= 0.25 and depth.max() <= 2.0


def test_dpt_fine_output_averages_to_the_grid_output_and_defaults_scale_with_width():
    features = synthetic_features([[5, 3]], 5, 3, seed=6)
    head = DPTHead([8] * 4, num_classes=2).eval()
    with torch.no_grad():
        fine, mask = head.forward_fine(features)
        grid = head(features)
    assert fine.shape == (1, 2, 40, 24) and mask.shape == (1, 40, 24) and mask.all()
    assert torch.allclose(grid[0, :, 4, 1], fine[0, :, 32:40, 8:16].mean(dim=(-2, -1)), atol=1e-6)
    assert default_reassemble_channels([768] * 4) == [96, 192, 384, 768]
    assert default_fusion_width([768] * 4) == 256 and default_fusion_width([1152] * 4) == 256
    assert default_reassemble_channels([WIDTH] * 4) == [4, 8, 16, 32]
    tiny = DPTHead([WIDTH] * 4, num_classes=3)
    assert [r.project.out_channels for r in tiny.reassemble] == [4, 8, 16, 32]
    assert tiny.stage_convs[0].out_channels == default_fusion_width([WIDTH] * 4) == 10
    assert DPTHead([WIDTH] * 4, num_classes=3, features=6).stage_convs[0].out_channels == 6


def test_build_head_registry_and_argument_errors():
    assert set(HEADS) >= {"linear", "bins", "dpt"}
    with pytest.raises(ValueError, match="expected one of bins, cost_aggregation, dpt, dpt_normals, linear, linear_normals, openvocab"):
        build_head("segformer", in_channels=[8])
    with pytest.raises(RequestError, match="exactly 4"):
        build_head("dpt", in_channels=[8] * 3, num_classes=2)
    with pytest.raises(RequestError, match="min_depth"):
        build_head("bins", in_channels=[8], min_depth=5.0, max_depth=1.0)
    with pytest.raises(RequestError, match="in_channels"):
        build_head("linear", in_channels=8, num_classes=2)
    with pytest.raises(RequestError, match="layers='first'"):
        build_head("linear", in_channels=[8], num_classes=2, layers="first")


@pytest.mark.parametrize("case", list(HEAD_CASES))
def test_head_config_rebuilds_an_identical_head(case):
    head = make_head(case, [8] * 4)
    rebuilt = build_head(case.split("-")[0], **head.config)
    assert rebuilt.config == head.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in head.state_dict().items()}
    assert math.isfinite(sum(p.sum().item() for p in rebuilt.parameters()))


@pytest.mark.parametrize("case", ["dpt-seg", "dpt-depth"])
def test_dpt_channels_last_gives_the_contiguous_outputs_and_gradients(case):
    """The default memory order (channels-last, faster on CPU) changes no number beyond float rounding."""
    features = synthetic_features([[5, 7], [6, 4]], 6, 7, seed=3)
    torch.manual_seed(0)
    plain = build_head("dpt", in_channels=[8] * 4, channels_last=False, **HEAD_CASES[case])
    last = make_head(case, [8] * 4)
    last.load_state_dict(plain.state_dict())
    assert last.stage_convs[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.stage_convs[0].weight.is_contiguous() and last.config["channels_last"] is True
    outputs = [head(features) for head in (plain, last)]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
    for output in outputs:
        output.square().sum().backward()
    torch.testing.assert_close(last.stage_convs[0].weight.grad, plain.stage_convs[0].weight.grad, rtol=1e-4, atol=1e-5)
