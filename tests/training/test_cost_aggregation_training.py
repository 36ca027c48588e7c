"""The COCO-Stuff cost-aggregation config (CAT-Seg's recipe) runs end to end on synthetic data in COCO-Stuff's
layout: tools/train.py's engine with attention-only tuning, then the trained head through tools/eval.py's run,
the eval-openvocab harness and the segmenter, each with a vocabulary it was not trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CHECKPOINT
from safetensors.torch import load_file

from siglip2_dense.config import load_config
from siglip2_dense.data.write_formats import write_synthetic
from siglip2_dense.evaluation.run import run_evaluation
from siglip2_dense.losses import one_hot_binary_cross_entropy_sum
from siglip2_dense.openvocab import benchmark_table as table
from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter
from siglip2_dense.training.engine import train

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "cocostuff_cost_aggregation_siglip2-l16-384.yaml"
SMALL_RUN = [  # the demo tower (4 blocks of width 128, patch 8) and 64 px scenes; the recipe otherwise as shipped
    f"model.backbone={DEMO_CHECKPOINT}", "model.layers=[0,1,3]", "data.crop_size=[64,64]", "data.short_side=64",
    "data.scale_range=[1.0,1.0]", "data.num_workers=0", "train.iterations=2", "train.batch_size=2",
    "train.val_every=2", "train.checkpoint_every=2", "train.log_every=1", "train.device=cpu",
    "eval.crop_size=[64,64]", "eval.stride=[32,32]", "head.args.window_size=4", "head.args.class_chunk=32",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cost-aggregation")
    write_synthetic("cocostuff", root, 8, 0, (64, 64))
    write_synthetic("voc", root, 8, 0, (64, 64))
    out = root / "run"
    config = load_config(CONFIG, [*SMALL_RUN, f"data.root={root / 'coco_stuff164k'}", f"train.output_dir={out}"])
    result = train(config)
    return root, out, config, result


def test_config_trains_with_attention_only_tuning_and_saves_the_head(trained):
    root, out, config, result = trained
    assert config.model.tune_attention and config.train.segmentation_loss == "binary_cross_entropy"
    assert result["best"] is not None and 0.0 <= result["best"]["value"] <= 100.0
    saved = json.loads((out / "best" / "dense_model.json").read_text())
    assert saved["head"]["name"] == "cost_aggregation" and saved["head"]["config"]["labels"] == "class_names/coco_stuff"
    tuned = load_file(str(out / "best" / "backbone.safetensors"))
    assert tuned and all(("q_proj" in k or "v_proj" in k or "position_embedding" in k) for k in tuned)
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 2 and all(0.0 < loss < 1.0 for loss in losses)  # BCE per class: about log 2 at start


def test_trained_head_evaluates_on_the_data_sets_own_vocabulary(trained, tmp_path):
    root, out, config, _ = trained
    result = run_evaluation(config, checkpoint=out / "best", out=tmp_path / "eval", progress=False,
                            text_cache_dir=str(tmp_path / "cache"))
    assert result.record["model"]["head"] == "cost_aggregation"
    assert len(result.record["labels"]) == 171 and 0.0 <= result.record["metrics"]["mIoU"] <= 100.0


def test_harness_and_segmenter_take_the_trained_head(trained, tmp_path):
    root, out, _, _ = trained
    code = table.main(["--model", str(DEMO_CHECKPOINT), "--head", str(out / "best"), "--data-root", str(root),
                       "--out", str(tmp_path), "--vocabulary", "synthetic", "--benchmarks", "voc20",
                       "--short-side", "64", "--window", "64", "--stride", "32", "--cache-dir", str(tmp_path / "c")])
    assert code == 0
    row = json.loads((tmp_path / table.TABLE_JSON).read_text())["rows"][0]
    assert "head" in row["name"] and row["results"]["voc20"]["num_images"] == 2
    segmenter = OpenVocabSegmenter.from_pretrained(str(DEMO_CHECKPOINT), head=out / "best",
                                                   cache_dir=tmp_path / "c")
    image = torch.randint(0, 256, (48, 80, 3), dtype=torch.uint8).numpy()
    result = segmenter(image, ["red circle", "blue star", "background"])
    assert result.scores.shape == (3, 48, 80) and result.label_map.shape == (48, 80)
    assert float(result.scores.min()) >= 0.0 and float(result.scores.max()) <= 1.0


def test_one_hot_binary_cross_entropy_is_catseg_mean_times_the_count():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 4, 3, 5), torch.randint(0, 4, (2, 3, 5))
    target[0, 0, :2] = 255
    # CAT-Seg cat_seg_model.py: zeros, one-hot rows where target != ignore, BCE-with-logits mean
    outputs = logits.permute(0, 2, 3, 1)
    targets = torch.zeros(outputs.shape)
    mask = target != 255
    targets[mask] = torch.nn.functional.one_hot(target[mask], num_classes=4).float()
    reference = torch.nn.functional.binary_cross_entropy_with_logits(outputs, targets)
    torch.testing.assert_close(one_hot_binary_cross_entropy_sum(logits, target) / logits.numel(), reference)


def test_a_head_grid_embeds_its_training_classes_once(monkeypatch, tmp_path):
    from siglip2_dense.build import build_backbone, build_head_grid
    from siglip2_dense.text.encoder import TextEncoder

    loads = []
    original = TextEncoder.from_pretrained.__func__
    monkeypatch.setattr(TextEncoder, "from_pretrained",
                        classmethod(lambda cls, *a, **k: loads.append(a[0]) or original(cls, *a, **k)))
    config = load_config(CONFIG, [*SMALL_RUN, "data.root=/unused", "train.lr_grid=[1e-4,2e-4]",
                                  "model.tune_attention=false"])
    grid = build_head_grid(config, build_backbone(config, "cpu"))
    assert len(grid.heads) == 2 and len(loads) == 1
    assert grid.heads[0].vocabulary.shape == (171, 1, 128)
    assert grid.heads[0].vocabulary is grid.heads[1].vocabulary
