"""Property tests: the data-set metrics do not depend on how the images reach the evaluator.

Updates in any order give the same result, and one update per image gives what one update of all the
images together gives (segmentation: the union of their pixels; depth: one batch, the protocol being
per-image). Segmentation sums integer pixel counts in float64, so its results are equal bit for bit;
depth sums per-image floats, so a different order may round the last bit differently. The sliding
window, for any image, crop and stride, reads every pixel and only pixels of the image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from siglip2_dense.evaluation import DepthEvaluator, SegmentationEvaluator
from siglip2_dense.inference import slide_window

IGNORE = 255
image_sizes = st.lists(st.tuples(st.integers(1, 9), st.integers(1, 9)), min_size=1, max_size=5)


def segmentation_pairs(sizes: list[tuple[int, int]], num_classes: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: a prediction in [0, K) and a target in [0, K) with some pixels ignored."""
    rng = np.random.default_rng(seed)
    pairs = []
    for height, width in sizes:
        pred = rng.integers(0, num_classes, size=(height, width))
        target = rng.integers(0, num_classes, size=(height, width))
        target[rng.random((height, width)) < 0.2] = IGNORE
        pairs.append((torch.from_numpy(pred), torch.from_numpy(target)))
    return pairs


def segmentation_metrics(pairs: list[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> dict:
    evaluator = SegmentationEvaluator(num_classes=num_classes, ignore_index=IGNORE)
    for pred, target in pairs:
        evaluator.update(pred, target)
    return evaluator.compute()


def as_vector(metrics: dict) -> np.ndarray:
    """Every number of a metrics dict, scalars and per-class lists, in key order."""
    return np.concatenate([np.atleast_1d(np.asarray(metrics[key], dtype=np.float64)) for key in sorted(metrics)])


def same_metrics(a: dict, b: dict) -> bool:
    """Equal keys and values, NaN equal to NaN (a class with no union has IoU NaN in both)."""
    return sorted(a) == sorted(b) and np.array_equal(as_vector(a), as_vector(b), equal_nan=True)


@settings(max_examples=40, deadline=None)
@given(sizes=image_sizes, num_classes=st.integers(1, 5), seed=st.integers(0, 2**16), order_seed=st.integers(0, 2**16))
def test_segmentation_metrics_do_not_depend_on_the_update_order(sizes, num_classes, seed, order_seed):
    pairs = segmentation_pairs(sizes, num_classes, seed)
    shuffled = [pairs[i] for i in np.random.default_rng(order_seed).permutation(len(pairs))]
    assert same_metrics(segmentation_metrics(pairs, num_classes), segmentation_metrics(shuffled, num_classes))


@settings(max_examples=40, deadline=None)
@given(sizes=image_sizes, num_classes=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_segmentation_per_image_updates_equal_one_update_of_the_union(sizes, num_classes, seed):
    pairs = segmentation_pairs(sizes, num_classes, seed)
    union_pred = torch.cat([pred.flatten() for pred, _ in pairs])[None]  # all pixels as one [1, N] map
    union_target = torch.cat([target.flatten() for _, target in pairs])[None]
    assert same_metrics(segmentation_metrics(pairs, num_classes),
                        segmentation_metrics([(union_pred, union_target)], num_classes))


def depth_pairs(count: int, height: int, width: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image: ground truth with invalid pixels (0, beyond max depth; now and then all of them) and a
    prediction with out-of-range and non-finite values, which the protocol clamps."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        gt = rng.uniform(0.5, 12.0, size=(height, width))
        gt[rng.random((height, width)) < 0.3] = 0.0
        if rng.random() < 0.2:
            gt[:] = 0.0
        pred = rng.uniform(-1.0, 14.0, size=(height, width))
        pred[rng.random((height, width)) < 0.05] = np.nan
        pred[rng.random((height, width)) < 0.05] = np.inf
        pairs.append((torch.from_numpy(pred), torch.from_numpy(gt)))
    return pairs


def depth_metrics(updates: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
    evaluator = DepthEvaluator(min_depth=1e-3, max_depth=10.0, crop=None)
    for pred, gt in updates:
        evaluator.update(pred, gt)
    return evaluator.compute()


def assert_depth_metrics_equal(a: dict, b: dict) -> None:
    assert (a["num_images"], a["skipped"]) == (b["num_images"], b["skipped"])
    for name in a:
        assert a[name] == pytest.approx(b[name], rel=1e-12, abs=1e-15, nan_ok=True), name


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 5), height=st.integers(1, 8), width=st.integers(1, 8), seed=st.integers(0, 2**16),
       order_seed=st.integers(0, 2**16))
def test_depth_metrics_do_not_depend_on_the_update_order(count, height, width, seed, order_seed):
    pairs = depth_pairs(count, height, width, seed)
    shuffled = [pairs[i] for i in np.random.default_rng(order_seed).permutation(count)]
    assert_depth_metrics_equal(depth_metrics(pairs), depth_metrics(shuffled))


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 5), height=st.integers(1, 8), width=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_depth_per_image_updates_equal_one_batched_update(count, height, width, seed):
    pairs = depth_pairs(count, height, width, seed)
    batch = (torch.stack([pred for pred, _ in pairs]), torch.stack([gt for _, gt in pairs]))
    per_image, batched = depth_metrics(pairs), depth_metrics([batch])
    assert_depth_metrics_equal(per_image, batched)
    assert per_image["num_images"] + per_image["skipped"] == count


@settings(max_examples=60, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 40), crop_h=st.integers(1, 16), crop_w=st.integers(1, 16),
       data=st.data())
def test_sliding_window_reads_every_pixel_and_nothing_outside_the_image(height, width, crop_h, crop_w, data):
    stride = (data.draw(st.integers(1, crop_h)), data.draw(st.integers(1, crop_w)))
    image = torch.arange(height * width, dtype=torch.float64).reshape(1, 1, height, width) + 1.0
    seen = torch.zeros(height, width, dtype=torch.bool)

    def pixelwise(window: torch.Tensor) -> torch.Tensor:
        assert window.shape[-2] <= crop_h and window.shape[-1] <= crop_w  # a window, never padding
        assert bool((window > 0).all())  # only image pixels (padding would be 0)
        seen[((window[0, 0] - 1).long() // width, (window[0, 0] - 1).long() % width)] = True
        return window * 2.0

    out = slide_window(pixelwise, image, crop=(crop_h, crop_w), stride=stride)
    assert bool(seen.all())  # every pixel was in some window
    assert torch.equal(out, image * 2.0)  # the overlaps averaged back to the pixel's own value
