"""Every configs/paper_table2 column trains offline: tools/train.py on synthetic data in the column's real on-disk
format (VOC with the augmented set, ADE20K, NYUv2 BTS, the labeled .mat with Ladicky-style normals, NAVI), on the
demo backbone, for two steps and one validation, with only sizes and the tower overridden."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tools.train as train_tool
from siglip2_dense.config import load_config
from siglip2_dense.data import write_synthetic
from siglip2_dense.training.engine import read_log

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = sorted((ROOT / "configs" / "paper_table2").glob("*.yaml"))
DEMO = ROOT / "assets" / "demo-siglip2"  # NaFlex, 4 blocks, patch 8
# data.dataset (+ task) -> (synthetic format, scenes, the folder the writer returns is the root)
FORMATS = {("voc", "segmentation"): "voc", ("ade20k", "segmentation"): "ade20k", ("nyu", "depth"): "nyu-bts",
           ("nyu", "normals"): "nyu-mat", ("navi", "depth"): "navi", ("navi", "normals"): "navi"}
SCENES = {"navi": 32}


@pytest.fixture(scope="module")
def data_roots(tmp_path_factory):
    roots = {}
    for name in sorted(set(FORMATS.values())):
        roots[name] = write_synthetic(name, tmp_path_factory.mktemp(name), num=SCENES.get(name, 8), seed=1,
                                      size=(64, 64))
    return roots


def overrides(config, root, out):
    window = 128 if config.data.dataset == "navi" else 64  # NAVI items are 512 x 512 object crops
    budget = (window // 8) ** 2
    args = [f"model.backbone={DEMO}", f"data.root={root}", f"train.output_dir={out}", "train.device=cpu",
            "train.iterations=2", "train.batch_size=2", "train.val_every=2", "train.checkpoint_every=2",
            "train.warmup_iterations=1", "train.log_every=1", "data.num_workers=0", f"data.crop_size=[{window},{window}]",
            f"eval.crop_size=[{window},{window}]", f"eval.stride=[{window},{window}]",
            f"model.max_num_patches={budget}", f"model.eval_max_num_patches={budget}"]
    if config.task == "segmentation":
        args.append("data.short_side=64")
    if isinstance(config.model.layers, list):
        args += ["model.layers=[0,1,2,3]", "head.args.features=32"]  # the demo tower has 4 blocks
    return args


@pytest.mark.slow
@pytest.mark.parametrize("path", COLUMNS, ids=lambda p: p.stem)
def test_column_trains_and_validates_offline(path, data_roots, tmp_path, capsys):
    config = load_config(path)
    root = data_roots[FORMATS[(config.data.dataset, config.task)]]
    out = tmp_path / "run"
    assert train_tool.main(["--config", str(path), *overrides(config, root, out)]) == 0
    best = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["best"]
    losses = [r["loss"] for r in read_log(out / "log.jsonl") if "loss" in r]
    assert len(losses) == 2 and all(np.isfinite(losses))
    metric = {"segmentation": "mIoU", "depth": "rmse", "normals": "rmse"}[config.task]
    assert np.isfinite(best["metrics"][metric]), best
    saved = load_config(out / "config.yaml") if (out / "config.yaml").is_file() else None
    assert saved is None or (saved.protocol == config.protocol and saved.deviations == config.deviations)
