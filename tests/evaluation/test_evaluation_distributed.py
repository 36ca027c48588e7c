"""The three evaluators under a 2-process gloo group: each rank updates half the data, compute() on every
rank equals the single-process result on all of it (the states are sums reduced by torchmetrics)."""

from __future__ import annotations

import json
import math
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import assert_close_with_missing

from siglip2_dense.evaluation import DepthEvaluator, NormalsEvaluator, SegmentationEvaluator

WORLD_SIZE = 2
NUM_CLASSES = 6


def label_maps(seed: int = 0, num_images: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(pred, target) label maps of varying size; class 5 is never labelled, some pixels ignored."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(num_images):
        h, w = 8 + 3 * i, 20 - 2 * i
        target = torch.randint(0, NUM_CLASSES - 1, (h, w), generator=gen)
        target[torch.rand(h, w, generator=gen) < 0.1] = 255
        pred = torch.where(
            torch.rand(h, w, generator=gen) < 0.5,
            target % 255,
            torch.randint(0, NUM_CLASSES, (h, w), generator=gen),
        )
        pairs.append((pred, target))
    return pairs


def depth_maps(seed: int = 0, num_images: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(pred, gt) 96x128 depth maps in metres; image 3 has no valid pixel (skipped, on rank 1)."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(num_images):
        gt = torch.rand(96, 128, generator=gen, dtype=torch.float64) * 11.0
        gt[torch.rand(96, 128, generator=gen) < 0.2] = 0.0
        if i == 3:
            gt.zero_()
        pred = gt * (0.7 + 0.6 * torch.rand(96, 128, generator=gen, dtype=torch.float64)) + 0.01
        pairs.append((pred, gt))
    return pairs


def normal_maps(seed: int = 0, num_images: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(pred, gt) [16, 12, 3] normal maps; gt unit with missing (zero) pixels; image 2 has none valid."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    for i in range(num_images):
        gt = torch.nn.functional.normalize(torch.randn(16, 12, 3, generator=gen, dtype=torch.float64), dim=-1)
        gt[torch.rand(16, 12, generator=gen) < 0.2] = 0.0
        if i == 2:
            gt.zero_()
        pairs.append((gt + 0.4 * torch.randn(16, 12, 3, generator=gen, dtype=torch.float64), gt))
    return pairs


def evaluate(segmentation_pairs, depth_pairs, normals_pairs) -> dict:
    seg = SegmentationEvaluator(num_classes=NUM_CLASSES)
    for pred, target in segmentation_pairs:
        seg.update(pred, target)
    depth = DepthEvaluator(crop="eigen")
    for pred, gt in depth_pairs:
        depth.update(pred, gt)
    normals = NormalsEvaluator()
    for pred, gt in normals_pairs:
        normals.update(pred, gt)
    return {"segmentation": seg.compute(), "depth": depth.compute(), "normals": normals.compute()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def distributed_worker(rank: int, port: int, out_path: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        result = evaluate(label_maps()[rank::WORLD_SIZE], depth_maps()[rank::WORLD_SIZE],
                          normal_maps()[rank::WORLD_SIZE])
        with open(f"{out_path}.{rank}", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def flatten(result: dict) -> dict:
    """{"segmentation": {...}, "depth": {...}} -> {"segmentation.IoU.3": x, ...}."""
    flat = {}
    for task, metrics in result.items():
        for key, value in metrics.items():
            values = value if isinstance(value, list) else [value]
            for i, v in enumerate(values):
                flat[f"{task}.{key}.{i}"] = v
    return flat


def test_two_process_gloo_compute_equals_single_process(tmp_path):
    out_path = str(tmp_path / "result")
    mp.spawn(distributed_worker, args=(free_port(), out_path), nprocs=WORLD_SIZE, join=True)
    expected = evaluate(label_maps(), depth_maps(), normal_maps())
    assert expected["normals"]["num_images"] == 4 and expected["normals"]["skipped"] == 1
    assert expected["depth"]["num_images"] == 4 and expected["depth"]["skipped"] == 1
    assert math.isnan(expected["segmentation"]["Acc"][5])  # a NaN that must survive the sync
    for rank in range(WORLD_SIZE):
        with open(f"{out_path}.{rank}") as f:
            got, want = flatten(json.load(f)), flatten(expected)
        assert list(got) == list(want), f"rank {rank}"
        assert_close_with_missing(list(got.values()), list(want.values()), rel=1e-12, what=f"rank {rank}")
