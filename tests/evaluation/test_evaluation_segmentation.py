"""SegmentationEvaluator: hand-computed numbers, parity with mmseg's formulas, distributed sync."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from siglip2_dense.errors import DataError, RequestError
from siglip2_dense.evaluation import SegmentationEvaluator, areas_to_metrics, intersect_and_union

IGNORE = 255


def assert_metrics_equal(actual: dict, expected: dict, rtol: float = 1e-12) -> None:
    assert set(actual) == {"mIoU", "mAcc", "aAcc", "IoU", "Acc"}
    for key in ("mIoU", "mAcc", "aAcc"):
        np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, err_msg=key)
    for key in ("IoU", "Acc"):
        np.testing.assert_allclose(np.array(actual[key]), np.array(expected[key]), rtol=rtol, err_msg=key)


def test_hand_computed_metrics_with_ignored_absent_and_false_positive_classes():
    # class 0, 1: in both; class 2: in neither; class 3: predicted, never labelled.
    # The top-right pixel is ignored: its prediction (3) must not count.
    target = torch.tensor([[0, 0, 1, IGNORE], [0, 0, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 3], [0, 3, 1, 0]])
    ev = SegmentationEvaluator(num_classes=4, ignore_index=IGNORE)
    ev.update(pred, target)
    result = ev.compute()
    # class 0: intersection 2, predicted 3, labelled 4 -> union 5: IoU 2/5, Acc 2/4
    # class 1: intersection 2, predicted 3, labelled 3 -> union 4: IoU 2/4, Acc 2/3
    # class 2: union 0 -> NaN, NaN (left out of both means)
    # class 3: intersection 0, predicted 1 (not 2: one is ignored), labelled 0 -> IoU 0, Acc NaN
    assert result["IoU"][0] == pytest.approx(40.0)
    assert result["IoU"][1] == pytest.approx(50.0)
    assert math.isnan(result["IoU"][2])
    assert result["IoU"][3] == 0.0
    assert result["Acc"][0] == pytest.approx(50.0)
    assert result["Acc"][1] == pytest.approx(66.66666666666667)
    assert math.isnan(result["Acc"][2]) and math.isnan(result["Acc"][3])
    assert result["mIoU"] == pytest.approx(30.0)  # (40 + 50 + 0) / 3
    assert result["mAcc"] == pytest.approx(58.333333333333336)  # (50 + 66.67) / 2
    assert result["aAcc"] == pytest.approx(57.142857142857146)  # 4 correct of 7 counted pixels


def test_dataset_level_sums_not_mean_of_per_image_iou():
    # image 1: class 0 perfect on 1 pixel; image 2: class 0, 1 pixel predicted, 2 labelled
    ev = SegmentationEvaluator(num_classes=2)
    ev.update(torch.tensor([[0]]), torch.tensor([[0]]))
    ev.update(torch.tensor([[0, 1]]), torch.tensor([[0, 0]]))
    result = ev.compute()
    # class 0: intersection 2, union 3 -> 66.67 (mean of per-image IoUs would be (100 + 50) / 2 = 75)
    assert result["IoU"][0] == pytest.approx(200 / 3)
    assert result["IoU"][1] == 0.0  # predicted once, never labelled
    assert result["mIoU"] == pytest.approx(100 / 3)
    assert result["mAcc"] == pytest.approx(200 / 3)  # class 1 has no label: left out
    assert result["aAcc"] == pytest.approx(200 / 3)


def test_pure_functions_return_float64_counts():
    areas = intersect_and_union(torch.tensor([0, 2, 2, 1]), torch.tensor([0, 2, 1, IGNORE]), 3, IGNORE)
    expected = ([1, 0, 1], [1, 1, 2], [1, 0, 2], [1, 1, 1])  # intersect, union, pred, label
    for area, values in zip(areas, expected):
        assert area.dtype == torch.float64
        assert area.tolist() == values
    assert areas_to_metrics(*areas)["IoU"] == pytest.approx([100.0, 0.0, 50.0])


def mmseg_reference(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int, ignore_index: int) -> dict:
    """A direct numpy transcription of mmseg IoUMetric: histc-style histograms, sums, nanmean * 100."""
    totals = [np.zeros(num_classes) for _ in range(4)]
    for pred, label in pairs:
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        intersect = pred[pred == label]
        hist = lambda x: np.histogram(x, bins=num_classes, range=(0, num_classes - 1))[0]  # noqa: E731
        area_intersect, area_pred, area_label = hist(intersect), hist(pred), hist(label)
        area_union = area_pred + area_label - area_intersect
        for total, area in zip(totals, (area_intersect, area_union, area_pred, area_label)):
            total += area
    intersect, union, _, label = totals
    with np.errstate(divide="ignore", invalid="ignore"):
        iou, acc = intersect / union, intersect / label
        return {
            "aAcc": intersect.sum() / label.sum() * 100,
            "mIoU": np.nanmean(iou) * 100,
            "mAcc": np.nanmean(acc) * 100,
            "IoU": iou * 100,
            "Acc": acc * 100,
        }


def random_dataset(
    seed: int, num_images: int = 6, num_classes: int = 9
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Label maps of varying sizes; classes 7 and 8 never labelled (8 never predicted); ~10 % ignored."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for _ in range(num_images):
        h, w = (int(v) for v in torch.randint(5, 40, (2,), generator=gen))
        target = torch.randint(0, num_classes - 2, (h, w), generator=gen)
        target[torch.rand(h, w, generator=gen) < 0.1] = IGNORE
        noise = torch.randint(0, num_classes - 1, (h, w), generator=gen)
        pred = torch.where(torch.rand(h, w, generator=gen) < 0.6, target.clamp(max=num_classes - 1), noise)
        pairs.append((pred, target))
    return pairs


def evaluate(pairs, num_classes: int = 9) -> dict:
    ev = SegmentationEvaluator(num_classes=num_classes, ignore_index=IGNORE)
    for pred, target in pairs:
        ev.update(pred, target)
    return ev.compute()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parity_with_numpy_mmseg_formulas(seed):
    pairs = random_dataset(seed)
    expected = mmseg_reference([(p.numpy(), t.numpy()) for p, t in pairs], 9, IGNORE)
    result = evaluate(pairs)
    assert math.isnan(result["IoU"][8]) and result["IoU"][7] == 0.0  # the data set has both cases
    assert_metrics_equal(result, expected)


def test_update_order_does_not_change_metrics():
    pairs = random_dataset(3)
    assert_metrics_equal(evaluate(pairs[::-1]), evaluate(pairs), rtol=0)


def test_per_image_updates_equal_one_batched_update():
    gen = torch.Generator().manual_seed(4)
    target = torch.randint(0, 5, (4, 16, 12), generator=gen)
    target[:, :2] = IGNORE
    pred = torch.randint(0, 5, (4, 16, 12), generator=gen)
    batched = SegmentationEvaluator(num_classes=5)
    batched.update(pred, target)
    assert_metrics_equal(batched.compute(), evaluate(list(zip(pred, target)), num_classes=5), rtol=0)


def test_reset_clears_the_sums():
    ev = SegmentationEvaluator(num_classes=2)
    ev.update(torch.tensor([[1, 1]]), torch.tensor([[0, 0]]))
    ev.reset()
    ev.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert ev.compute()["mIoU"] == pytest.approx(100.0)


def test_shape_mismatch_names_both_shapes():
    ev = SegmentationEvaluator(num_classes=3)
    with pytest.raises(DataError, match=r"\(2, 3\).*\(3, 2\)"):
        ev.update(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))


def test_labels_outside_the_class_range_are_an_error_not_silently_dropped():
    ev = SegmentationEvaluator(num_classes=3)
    with pytest.raises(DataError, match="outside"):
        ev.update(torch.tensor([[0, 1]]), torch.tensor([[0, 3]]))  # 3 is neither a class nor ignored
    with pytest.raises(DataError, match="integer"):
        ev.update(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long))


def test_bad_num_classes_is_a_request_error():
    with pytest.raises(RequestError):
        SegmentationEvaluator(num_classes=0)
