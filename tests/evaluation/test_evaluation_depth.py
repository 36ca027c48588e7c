"""DepthEvaluator: hand-computed errors, crops, clamping, skipped images, BTS parity, distributed sync."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siglip2_dense.errors import DataError, RequestError
from siglip2_dense.evaluation import (
    DEPTH_METRIC_NAMES,
    DepthEvaluator,
    compute_depth_errors,
    evaluation_crop_mask,
)


def as_floats(errors: dict) -> dict:
    return {k: float(v) for k, v in errors.items()}


def test_compute_depth_errors_by_hand():
    gt = torch.tensor([1.0, 2.0, 4.0])
    pred = torch.tensor([1.0, 1.0, 5.0])
    # ratios max(gt/pred, pred/gt) = 1, 2, 1.25 (1.25 is not < 1.25)
    # log errors log(pred/gt) = 0, -ln 2, ln 1.25
    e2, e3 = math.log(2.0), math.log(1.25)
    mean_sq, mean = (e2**2 + e3**2) / 3, (-e2 + e3) / 3
    expected = {
        "d1": 1 / 3,
        "d2": 2 / 3,  # 1.25 < 1.5625, 2 is not
        "d3": 2 / 3,  # 2 is not < 1.953125
        "abs_rel": (0 + 1 / 2 + 1 / 4) / 3,
        "sq_rel": (0 + 1 / 2 + 1 / 4) / 3,
        "rmse": math.sqrt(2 / 3),
        "rmse_log": math.sqrt(mean_sq),
        "log10": math.log10(2.5) / 3,  # (log10 2 + log10 1.25) / 3
        "silog": math.sqrt(mean_sq - mean**2) * 100,
    }
    assert as_floats(compute_depth_errors(gt, pred)) == pytest.approx(expected, rel=1e-12)
    assert expected["silog"] == pytest.approx(39.0133, abs=1e-4)  # the same number written out


def test_perfect_prediction_up_to_scale_has_zero_silog_not_nan():
    gt = torch.linspace(0.5, 9.0, 1000)
    errors = as_floats(compute_depth_errors(gt, gt * 1.1))
    assert errors["silog"] == pytest.approx(0.0, abs=1e-5)
    assert errors["abs_rel"] == pytest.approx(0.1)


def test_eigen_crop_excludes_what_lies_outside_it():
    gt = torch.full((480, 640), 2.0)
    pred = torch.full((480, 640), 4.0)  # 100 % off outside the crop...
    pred[45:471, 41:601] = 2.0  # ...and exact inside it
    outside_fraction = (480 * 640 - 426 * 560) / (480 * 640)  # 68640 / 307200
    cropped = DepthEvaluator(crop="eigen")
    cropped.update(pred, gt)
    result = cropped.compute()
    assert result["abs_rel"] == 0.0 and result["d1"] == 1.0 and result["rmse"] == 0.0
    uncropped = DepthEvaluator(crop=None)
    uncropped.update(pred, gt)
    result = uncropped.compute()
    assert result["abs_rel"] == pytest.approx(0.2234375) == pytest.approx(outside_fraction)
    assert result["d1"] == pytest.approx(0.7765625)
    assert result["rmse"] == pytest.approx(math.sqrt(4 * outside_fraction))


def test_crop_boxes():
    eigen = evaluation_crop_mask(480, 640, "eigen")
    assert int(eigen.sum()) == 426 * 560
    assert (
        eigen[45, 41] and eigen[470, 600] and not eigen[44, 41] and not eigen[471, 600] and not eigen[45, 601]
    )
    half = evaluation_crop_mask(240, 320, "eigen")  # rows 22.5 -> 22 .. 235.5 -> 235, cols 20 .. 300
    assert int(half.sum()) == (235 - 22) * (300 - 20) and half[22, 20] and not half[21, 20]
    garg = evaluation_crop_mask(480, 640, "garg")  # rows int(195.89)=195 .. int(476.11)=476, cols 23 .. 616
    assert int(garg.sum()) == (476 - 195) * (616 - 23)
    assert garg[195, 23] and garg[475, 615] and not garg[194, 23] and not garg[476, 23] and not garg[195, 616]
    assert bool(evaluation_crop_mask(3, 4, None).all())


def test_prediction_is_clamped_as_bts():
    gt = torch.tensor([[1.0, 2.0], [4.0, 8.0]])
    pred = torch.tensor([[math.nan, math.inf], [-math.inf, 20.0]])  # -> 0.5, 10, 0.5, 10
    ev = DepthEvaluator(min_depth=0.5, max_depth=10.0, crop=None)
    ev.update(pred, gt)
    result = ev.compute()
    assert result["abs_rel"] == pytest.approx((0.5 / 1 + 8 / 2 + 3.5 / 4 + 2 / 8) / 4)  # 1.40625
    # ratios 2, 5, 8, 1.25: none < 1.25, only 1.25 < 1.25**2 and < 1.25**3
    assert (result["d1"], result["d2"], result["d3"]) == (0.0, 0.25, 0.25)
    assert result["rmse"] == pytest.approx(math.sqrt((0.25 + 64 + 12.25 + 4) / 4))


def test_ground_truth_outside_the_depth_range_is_not_counted():
    gt = torch.tensor([[0.0, 2.0], [10.0, 4.0]])  # 0 and 10 (= max, not < max) are invalid
    pred = torch.tensor([[7.0, 3.0], [1.0, 4.0]])
    ev = DepthEvaluator(max_depth=10.0, crop=None)
    ev.update(pred, gt)
    assert ev.compute()["abs_rel"] == pytest.approx((0.5 + 0.0) / 2)


def test_images_are_averaged_not_pixels_and_empty_images_are_skipped():
    ev = DepthEvaluator(crop=None)
    ev.update(torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 2.0]]))  # abs_rel 0 on 2 pixels
    ev.update(torch.tensor([[3.0, 5.0]]), torch.tensor([[2.0, 0.0]]))  # abs_rel 0.5 on 1 valid pixel
    ev.update(torch.tensor([[3.0, 5.0]]), torch.tensor([[0.0, 20.0]]))  # no valid pixel
    result = ev.compute()
    assert result["abs_rel"] == pytest.approx(0.25)  # pixel-pooled would be 1/6
    assert result["num_images"] == 2 and result["skipped"] == 1
    assert not any(math.isnan(result[name]) for name in DEPTH_METRIC_NAMES)


def bts_reference(preds: list[np.ndarray], gts: list[np.ndarray], min_depth: float, max_depth: float) -> dict:
    """A direct numpy transcription of BTS's eval loop (NYU, --eigen_crop) and compute_errors."""
    rows = []
    for pred, gt in zip(preds, gts):
        pred = pred.copy()
        pred[pred < min_depth] = min_depth
        pred[pred > max_depth] = max_depth
        pred[np.isinf(pred)] = max_depth
        pred[np.isnan(pred)] = min_depth
        valid = np.logical_and(gt > min_depth, gt < max_depth)
        eval_mask = np.zeros(valid.shape)
        eval_mask[45:471, 41:601] = 1
        valid = np.logical_and(valid, eval_mask)
        g, p = gt[valid], pred[valid]
        thresh = np.maximum(g / p, p / g)
        err = np.log(p) - np.log(g)
        rows.append(
            {
                "d1": (thresh < 1.25).mean(),
                "d2": (thresh < 1.25**2).mean(),
                "d3": (thresh < 1.25**3).mean(),
                "abs_rel": np.mean(np.abs(g - p) / g),
                "sq_rel": np.mean(((g - p) ** 2) / g),
                "rmse": np.sqrt(((g - p) ** 2).mean()),
                "rmse_log": np.sqrt(((np.log(g) - np.log(p)) ** 2).mean()),
                "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
                "silog": np.sqrt(np.mean(err**2) - np.mean(err) ** 2) * 100,
            }
        )
    return {name: np.mean([row[name] for row in rows]) for name in DEPTH_METRIC_NAMES}


def random_depths(seed: int, num_images: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """480x640 float64 (pred, gt) pairs with holes (0), far pixels, and out-of-range predictions."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(num_images):
        gt = torch.rand(480, 640, generator=gen, dtype=torch.float64) * 11.0
        gt[torch.rand(480, 640, generator=gen) < 0.2] = 0.0
        pred = gt * (0.7 + 0.6 * torch.rand(480, 640, generator=gen, dtype=torch.float64))
        pred[torch.rand(480, 640, generator=gen) < 0.05] = -1.0
        pred[torch.rand(480, 640, generator=gen) < 0.05] = 50.0
        pairs.append((pred, gt))
    return pairs


def evaluate(pairs) -> dict:
    ev = DepthEvaluator(min_depth=1e-3, max_depth=10.0, crop="eigen")
    for pred, gt in pairs:
        ev.update(pred, gt)
    return ev.compute()


def test_parity_with_numpy_bts_eval():
    pairs = random_depths(0)
    expected = bts_reference([p.numpy() for p, _ in pairs], [g.numpy() for _, g in pairs], 1e-3, 10.0)
    result = evaluate(pairs)
    assert result["num_images"] == 4 and result["skipped"] == 0
    for name in DEPTH_METRIC_NAMES:
        assert result[name] == pytest.approx(expected[name], rel=1e-10), name


def test_order_and_batching_do_not_change_metrics():
    pairs = random_depths(1, num_images=3)
    reference = evaluate(pairs)
    reversed_order = evaluate(pairs[::-1])
    batched = DepthEvaluator(crop="eigen")
    batched.update(torch.stack([p for p, _ in pairs]).unsqueeze(1), torch.stack([g for _, g in pairs]))
    for other in (reversed_order, batched.compute()):
        assert other == pytest.approx(reference, rel=1e-12)


def test_errors_name_the_problem():
    with pytest.raises(RequestError, match="eigen"):
        DepthEvaluator(crop="kitti")
    with pytest.raises(RequestError):
        DepthEvaluator(min_depth=5.0, max_depth=1.0)
    with pytest.raises(DataError, match=r"\(1, 4, 4\).*\(1, 4, 5\)"):
        DepthEvaluator().update(torch.ones(4, 4), torch.ones(4, 5))


def test_states_reset_inside_inference_mode_stay_usable_outside():
    ev = DepthEvaluator(crop=None)
    with torch.inference_mode():
        ev.reset()
    ev.update(torch.tensor([[3.0]]), torch.tensor([[2.0]]))
    assert ev.compute()["abs_rel"] == pytest.approx(0.5)
