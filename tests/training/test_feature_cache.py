"""The frozen-feature cache: the same losses as computing the features live, reuse, keys, storage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from siglip2_dense.config import load_config
from siglip2_dense.errors import ConfigError
from siglip2_dense.training.engine import read_log, train
from siglip2_dense.training.feature_cache import MANIFEST, from_storage, to_storage

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"
# two fixed views per image, two lrs x two layer choices = four heads on the same features
GRID = ["model.layers=2", "data.train_views=2", "train.lr_grid=[1e-3,1e-2]", "train.layer_grid=[[-1],[-2,-1]]",
        "train.iterations=6", "train.val_every=6", "train.checkpoint_every=6", "train.log_every=1",
        "train.warmup_iterations=1", "head.args.use_pooled=true"]


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    from siglip2_dense.data import write_synthetic

    return write_synthetic("ade20k", tmp_path_factory.mktemp("synthetic-ade"), num=12, seed=2, size=(64, 64))


def run(checkpoint: Path, root: Path, out: Path, extra: list[str]) -> dict:
    args = [f"model.backbone={checkpoint}", f"data.root={root}", f"train.output_dir={out}", *GRID, *extra]
    return train(load_config(LINEAR, args))


def head_losses(out: Path) -> list[list[float]]:
    return [r["head_losses"] for r in read_log(out / "log.jsonl") if "head_losses" in r]


@pytest.fixture(scope="module")
def live_and_cached(tiny_naflex_dir, ade_root, tmp_path_factory):
    base = tmp_path_factory.mktemp("cache-runs")
    cache_dir = base / "cache"
    live = run(tiny_naflex_dir, ade_root, base / "live", [])
    cached = run(tiny_naflex_dir, ade_root, base / "cached",
                 ["train.feature_cache=true", f"train.feature_cache_dir={cache_dir}"])
    return base, cache_dir, live, cached


def test_cached_features_give_the_losses_of_live_features(live_and_cached):
    base, cache_dir, live, cached = live_and_cached
    live_losses, cached_losses = head_losses(base / "live"), head_losses(base / "cached")
    assert len(live_losses) == 6 and all(len(step) == 4 for step in live_losses)
    np.testing.assert_allclose(cached_losses, live_losses, rtol=1e-5)
    # the four heads differ (lrs, layers), so equal curves are not a constant in disguise
    assert all(len(set(np.round(step, 6))) == 4 for step in live_losses[1:])
    assert cached["best"]["head"] == live["best"]["head"]
    assert cached["best"]["value"] == pytest.approx(live["best"]["value"], abs=1e-6)
    assert (cached["best"]["lr"], cached["best"]["layers"]) == (live["best"]["lr"], live["best"]["layers"])


def test_the_cache_holds_every_view_and_is_reused(live_and_cached, tiny_naflex_dir, ade_root):
    base, cache_dir, _, _ = live_and_cached
    (entry,) = list(cache_dir.iterdir())
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["count"] == 2 * 9  # 2 views of the 9 training scenes
    assert manifest["num_layers"] == 2 and manifest["has_pooled"]
    assert manifest["inputs"]["layers"] == [1, 2] and manifest["inputs"]["views"] == 2
    layer = np.load(entry / "layer_0.npy", mmap_mode="r", allow_pickle=False)
    assert layer.shape == (18, 32, 8, 8) and np.abs(np.asarray(layer)).sum(axis=(1, 2, 3)).min() > 0
    stamp = (entry / MANIFEST).stat().st_mtime_ns
    run(tiny_naflex_dir, ade_root, base / "again",
        ["train.feature_cache=true", f"train.feature_cache_dir={cache_dir}", "train.iterations=2"])
    assert list(cache_dir.iterdir()) == [entry] and (entry / MANIFEST).stat().st_mtime_ns == stamp
    run(tiny_naflex_dir, ade_root, base / "other-layers",
        ["train.feature_cache=true", f"train.feature_cache_dir={cache_dir}", "train.iterations=2", "model.layers=3",
         "train.layer_grid=[[-1]]"])
    assert len(list(cache_dir.iterdir())) == 2  # other taps, another key


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_storage_round_trip(dtype):
    values = torch.randn(3, 4, 5)
    back = from_storage(to_storage(values, dtype), dtype)
    assert back.dtype == torch.float32 and back.shape == values.shape
    expected = values.to(getattr(torch, dtype)).float()
    assert torch.equal(back, expected)


def test_cache_needs_a_frozen_backbone_and_fixed_views(tiny_naflex_dir, ade_root, tmp_path):
    with pytest.raises(ConfigError, match="frozen backbone"):
        run(tiny_naflex_dir, ade_root, tmp_path / "a",
            ["train.feature_cache=true", "model.tune_last_blocks=1", "train.lr_grid=[]", "train.layer_grid=[]"])
    with pytest.raises(ConfigError, match="data.train_views"):
        run(tiny_naflex_dir, ade_root, tmp_path / "b", ["train.feature_cache=true", "data.train_views=0"])
