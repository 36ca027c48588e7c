"""A depth run with the protocol knobs end to end: DINOv2's DPT (regression at 16x the grid, readout project),
its SigLoss with warm-up, the NYU fixed crop and 0-255 colour augmentation, fp32 weights, and an
evaluation that honours the config's dtype and records it in metrics.json."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_train import BINS, small_naflex_tower

import tools.eval as eval_tool
from siglip2_dense.config import load_config
from siglip2_dense.data import write_synthetic
from siglip2_dense.evaluation.checkpoint import load_model_for_evaluation
from siglip2_dense.training.engine import read_log, train


def test_dpt_regression_with_the_dinov2_loss_trains_and_evaluates_in_fp32(tmp_path):
    # 480x640 scenes so the NYU fixed crop applies; 8x8 patches of 4 px on 32x32 training crops
    root = write_synthetic("nyu-bts", tmp_path / "data", num=6, seed=2, size=(480, 640))
    tower = small_naflex_tower(tmp_path / "tower", patch_size=4, num_patches=256)
    args = [f"model.backbone={tower}", f"data.root={root}", f"train.output_dir={tmp_path / 'run'}",
            "model.layers=[0,1,2,3]", "model.norm=false", "model.max_num_patches=64", "model.eval_max_num_patches=256",
            "head.name=dpt", "head.args={task: depth, min_depth: 0.001, max_depth: 10.0, depth_output: regression, "
            "output_resolution: decoder, readout: project, features: 16}", "head.args.num_bins=null",
            "data.fixed_crop=[45,472,43,608]", "data.colour_scale=pixel", "data.colour_prob=1.0",
            "train.precision=fp32", "train.iterations=4", "train.batch_size=4", "train.val_every=4",
            "train.checkpoint_every=4", "train.warmup_iterations=1", "train.lr=1e-3",
            "train.loss_args={form: dinov2, scale: 1.0, warm_up_iterations: 2, gradient_weight: 0.5, "
            "images_per_group: 2}", "eval.flip=true"]
    config = load_config(BINS, args)
    result = train(config)
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl") if "loss" in r]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert np.isfinite(result["best"]["value"])

    model = load_model_for_evaluation(tmp_path / "run" / "best", "cpu", dtype=torch.float32)
    assert model.head.output_scale == 16 and next(model.backbone.parameters()).dtype == torch.float32
    out = tmp_path / "eval"
    code = eval_tool.main(["--config", str(BINS), "--checkpoint", str(tmp_path / "run" / "best"), "--out", str(out),
                           "--no-progress", *args[1:2], *[a for a in args[3:] if a.startswith(("model.", "head.",
                                                                                               "eval.", "train.prec"))]])
    assert code == 0
    record = json.loads((out / "metrics.json").read_text())
    assert record["model"]["dtype"] == "float32" and record["model"]["precision"] == "fp32"
    assert record["eval"]["max_num_patches"] == 256
    # the validation inside training and the evaluation tool agree on the same model and protocol
    assert record["metrics"]["abs_rel"] == result["best"]["metrics"]["abs_rel"] or np.isclose(
        record["metrics"]["abs_rel"], result["best"]["metrics"]["abs_rel"], rtol=1e-4)
