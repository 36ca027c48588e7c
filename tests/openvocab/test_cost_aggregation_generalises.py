"""The known answer for the trained open-vocabulary head (slow): trained on the demo world's seen classes only,
it must segment classes it never saw better than any training-free variant, and keep the seen ones.

``siglip2_dense.demo.open_vocab_split``: 4 held-out colour-shape pairs (one per colour and per shape), training
scenes with their pixels unlabelled, the seen vocabulary of 13 names; evaluation on held-out demo scenes that
show an unseen class, segmented into all 17 classes (native inference, the single template, for every method).

Run: ``python -m pytest -m slow tests/openvocab/test_cost_aggregation_generalises.py -s`` (prints the figures).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import DEMO_CHECKPOINT

from siglip2_dense.config import load_config
from siglip2_dense.demo.open_vocab_split import (
    held_out_scenes,
    trained_head_scores,
    training_free_scores,
    write_seen_world,
)
from siglip2_dense.training.engine import train

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_cost_aggregation_seen.yaml"
TRAIN_SCENES, VAL_SCENES, TEST_SCENES = 1024, 48, 64


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "not met on the demo checkpoint: its patch features cap every head near the training-free figures (64 "
    "held-out scenes, seen / unseen mIoU: training-free plain 50.0 / 57.3; this head trained on the 13 seen "
    "classes 50.4 / 57.1; the same head trained on all 17 classes 49.7 / 57.2), so neither threshold is "
    "reachable with it; strict: the day a checkpoint passes, this marker must go"))
def test_trained_head_beats_every_training_free_variant_on_unseen_classes(tmp_path):
    root = write_seen_world(tmp_path / "seen", TRAIN_SCENES, VAL_SCENES)
    config = load_config(CONFIG, [f"model.backbone={DEMO_CHECKPOINT}", f"data.root={root}",
                                  f"train.output_dir={tmp_path / 'run'}"])
    start = time.perf_counter()
    train(config)
    minutes = (time.perf_counter() - start) / 60
    scenes = held_out_scenes(TEST_SCENES)
    cache = str(tmp_path / "text-cache")
    trained = trained_head_scores(str(DEMO_CHECKPOINT), tmp_path / "run" / "best", scenes, cache_dir=cache)
    free = training_free_scores(str(DEMO_CHECKPOINT), scenes, cache_dir=cache)
    best_free = max(free, key=lambda variant: free[variant]["unseen_miou"])
    print(f"\ntraining: {minutes:.1f} min ({config.train.iterations} steps of {config.train.batch_size})")
    print(f"trained cost aggregation: seen {trained['seen_miou']:.1f}, unseen {trained['unseen_miou']:.1f} mIoU")
    for variant, scores in free.items():
        print(f"training-free {variant}: seen {scores['seen_miou']:.1f}, unseen {scores['unseen_miou']:.1f} mIoU")
    assert trained["unseen_miou"] >= free[best_free]["unseen_miou"] + 10.0
    assert trained["seen_miou"] >= 70.0
