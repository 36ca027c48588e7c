"""NormalsEvaluator: hand-computed angles, Probe3D parity (per image, averaged), pixel-pooled parity with the
``compute_normal_errors`` lineage, the oracle, skipped images and bad shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siglip2_dense.errors import DataError
from siglip2_dense.evaluation import NormalsEvaluator, angular_errors_degrees, normal_error_metrics
from siglip2_dense.evaluation.normals import median_from_histogram


def rotated_about_y(degrees: float) -> list[float]:
    """The camera-facing normal (0, 0, -1) turned by ``degrees`` about the y axis."""
    angle = math.radians(degrees)
    return [math.sin(angle), 0.0, -math.cos(angle)]


def probe3d_evaluate_surface_norm(snorm_pr, snorm_gt, valid):
    """An independent transcription of Probe3D's ``evals/utils/metrics.py::evaluate_surface_norm`` (mbanani/probe3d)
    followed by ``train_snorm.py::validate``'s mean over images: inputs ``[B, 3, H, W]`` and ``valid [B, 1, H, W]``."""
    cos_sim = torch.cosine_similarity(snorm_pr, snorm_gt, dim=1).clamp(min=-1, max=1.0)
    err_deg = torch.acos(cos_sim) * 180.0 / torch.pi
    valid = valid.squeeze(1).float()
    err_deg = err_deg * valid
    num_valid = valid.sum(dim=(1, 2)).clamp(min=1)
    rmse = (err_deg.pow(2).sum(dim=(1, 2)) / num_valid).sqrt()
    d = [((err_deg < t).float() * valid).sum(dim=(1, 2)) / num_valid for t in (11.25, 22.5, 30)]
    return {"d1": d[0].mean(), "d2": d[1].mean(), "d3": d[2].mean(), "rmse": rmse.mean()}


def pooled_normal_errors(errors: np.ndarray) -> dict:
    """The data-set-pooled metrics of the normal-estimation lineage (Bae et al.'s ``compute_normal_errors``):
    every valid pixel of every image is one sample."""
    n = errors.shape[0]
    return {
        "pixel_mean": np.average(errors),
        "pixel_median": np.median(errors),
        "pixel_rmse": np.sqrt(np.sum(errors * errors) / n),
        "pixel_within_11.25": 100.0 * np.sum(errors < 11.25) / n,
        "pixel_within_22.5": 100.0 * np.sum(errors < 22.5) / n,
        "pixel_within_30": 100.0 * np.sum(errors < 30) / n,
    }


def random_normal_maps(seed: int = 0, num_images: int = 4, height: int = 12, width: int = 10):
    """(pred, gt) channel-last pairs; gt unit vectors with missing (zero) pixels, pred noisy and not unit."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for index in range(num_images):
        gt = torch.nn.functional.normalize(torch.randn(height, width, 3, generator=gen, dtype=torch.float64), dim=-1)
        gt[torch.rand(height, width, generator=gen) < 0.25] = 0.0
        pred = gt + (0.2 + 0.3 * index) * torch.randn(height, width, 3, generator=gen, dtype=torch.float64)
        pred = pred * (0.5 + torch.rand(height, width, 1, generator=gen, dtype=torch.float64))
        pairs.append((pred, gt))
    return pairs


def test_angular_errors_by_hand():
    gt = torch.tensor([[0.0, 0.0, -1.0]] * 4, dtype=torch.float64)
    lengths = torch.tensor([[1.0], [2.0], [0.3], [5.0]], dtype=torch.float64)
    pred = torch.tensor([rotated_about_y(a) for a in (0.0, 10.0, 22.5, 40.0)], dtype=torch.float64) * lengths
    errors = angular_errors_degrees(pred, gt)
    assert errors.tolist() == pytest.approx([0.0, 10.0, 22.5, 40.0], abs=1e-6)
    metrics = {k: float(v) for k, v in normal_error_metrics(errors).items()}
    assert metrics["mean"] == pytest.approx(72.5 / 4)
    assert metrics["median"] == pytest.approx(16.25)  # (10 + 22.5) / 2: the two middle values
    assert metrics["rmse"] == pytest.approx(math.sqrt((100 + 22.5**2 + 1600) / 4))
    # strict comparisons, as Probe3D: 22.5 (up to rounding) is not counted under 22.5 unless below it
    assert metrics["within_11.25"] == pytest.approx(50.0)
    assert metrics["within_30"] == pytest.approx(75.0)


def test_opposite_vectors_are_180_degrees():
    errors = angular_errors_degrees(torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, -1.0, 0.0]]))
    assert float(errors[0]) == pytest.approx(180.0)


def test_parity_with_probe3d_per_image_average():
    pairs = random_normal_maps()
    evaluator = NormalsEvaluator()
    for pred, gt in pairs:
        evaluator.update(pred, gt)
    ours = evaluator.compute()
    pred = torch.stack([p for p, _ in pairs]).permute(0, 3, 1, 2)
    gt = torch.stack([g for _, g in pairs]).permute(0, 3, 1, 2)
    valid = (gt.norm(dim=1, keepdim=True) > 0)
    reference = probe3d_evaluate_surface_norm(pred, gt, valid)
    assert ours["rmse"] == pytest.approx(float(reference["rmse"]), rel=1e-9)
    assert ours["within_11.25"] == pytest.approx(100 * float(reference["d1"]), rel=1e-6)  # reference: float32
    assert ours["within_22.5"] == pytest.approx(100 * float(reference["d2"]), rel=1e-6)  # reference: float32
    assert ours["within_30"] == pytest.approx(100 * float(reference["d3"]), rel=1e-6)  # reference: float32
    assert ours["num_images"] == 4 and ours["skipped"] == 0
    assert 10.0 < ours["rmse"] < 80.0  # a non-trivial case: noise grows with the image index


def test_parity_with_pixel_pooled_lineage_and_per_image_mean_median():
    pairs = random_normal_maps(seed=3)
    evaluator = NormalsEvaluator()
    evaluator.update(torch.stack([p for p, _ in pairs]), torch.stack([g for _, g in pairs]))
    ours = evaluator.compute()
    per_image = []
    for pred, gt in pairs:
        valid = gt.norm(dim=-1) > 0
        cosine = np.clip(np.sum(pred[valid].numpy() * gt[valid].numpy(), axis=1)
                         / np.linalg.norm(pred[valid].numpy(), axis=1), -1, 1)
        per_image.append(np.degrees(np.arccos(cosine)))
    pooled = pooled_normal_errors(np.concatenate(per_image))
    for key, value in pooled.items():
        tolerance = 1e-3 if key == "pixel_median" else 1e-9  # the histogram median: within half a bin
        assert ours[key] == pytest.approx(value, abs=tolerance, rel=1e-9), key
    assert ours["mean"] == pytest.approx(np.mean([e.mean() for e in per_image]), rel=1e-9)
    assert ours["median"] == pytest.approx(np.mean([np.median(e) for e in per_image]), rel=1e-9)
    assert ours["mean"] != pytest.approx(ours["pixel_mean"], rel=1e-6)  # the two rules differ here


def test_oracle_ground_truth_against_itself():
    _, gt = random_normal_maps(seed=5)[0]
    evaluator = NormalsEvaluator()
    evaluator.update(gt, gt)
    result = evaluator.compute()
    for key in ("mean", "median", "rmse", "pixel_mean", "pixel_median", "pixel_rmse"):
        assert result[key] == pytest.approx(0.0, abs=1e-3), key
    for key in ("within_11.25", "within_22.5", "within_30", "pixel_within_11.25"):
        assert result[key] == 100.0, key


def test_image_without_valid_pixel_is_skipped():
    pred, gt = random_normal_maps(seed=1)[0]
    evaluator = NormalsEvaluator()
    evaluator.update(pred, gt)
    alone = evaluator.compute()
    evaluator.update(pred, torch.zeros_like(gt))
    with_empty = evaluator.compute()
    assert with_empty["skipped"] == 1 and with_empty["num_images"] == 1
    assert with_empty["rmse"] == alone["rmse"]
    empty = NormalsEvaluator()
    empty.update(pred, torch.zeros_like(gt))
    assert math.isnan(empty.compute()["rmse"]) and math.isnan(empty.compute()["pixel_median"])


def test_median_from_histogram_interpolates_inside_the_bin():
    counts = torch.zeros(10, dtype=torch.float64)
    counts[2], counts[5] = 1, 3  # half of 4 = 2 falls one third into bin 5
    assert median_from_histogram(counts, bin_width=1.0) == pytest.approx(5 + 1 / 3)


def test_shapes_are_checked():
    evaluator = NormalsEvaluator()
    with pytest.raises(DataError, match="channels last"):
        evaluator.update(torch.zeros(1, 3, 4, 5), torch.zeros(1, 3, 4, 5))
    with pytest.raises(DataError, match="does not match"):
        evaluator.update(torch.zeros(4, 5, 3), torch.zeros(4, 6, 3))
