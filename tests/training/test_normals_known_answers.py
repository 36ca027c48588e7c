"""Known answers for surface normals on the synthetic world: the oracle scores 0 degrees and 100 % within
11.25 through the one evaluation loop, and a frozen linear probe on the demo checkpoint, trained and
evaluated by ``configs/synthetic_normals_tiny.yaml`` as shipped, reaches its measured figure.

Measured (CPU, float32, 32 scenes of 64x64: 24 train / 8 test, 40 steps of batch 8, lr 1e-2):
angular RMSE 34.03 deg, mean 27.93, median 21.86 (per image, averaged), 15.9 / 46.6 / 61.7 % within
11.25 / 22.5 / 30 deg. The constant guess "everything faces the camera" scores 53.2 deg RMSE on the same
images (every floor pixel 90 deg off).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import DEMO_CHECKPOINT

from siglip2_dense.build import build_eval_transform, build_evaluator
from siglip2_dense.config import load_config
from siglip2_dense.data import FolderNormalsDataset, write_synthetic
from siglip2_dense.data.synthetic import WALL_NORMAL
from siglip2_dense.evaluation.loop import evaluate_images

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_normals_tiny.yaml"


@pytest.fixture(scope="module")
def normals_root(tmp_path_factory) -> Path:
    return write_synthetic("normals-folder", tmp_path_factory.mktemp("normals"), num=32, seed=0, size=(64, 64))


def evaluate_predictor(predict, root: Path) -> dict:
    config = load_config(CONFIG, [f"data.root={root}"])
    dataset = FolderNormalsDataset(root, "test", transform=build_eval_transform(config))
    return evaluate_images(predict, dataset, build_evaluator(config), "normals", torch.device("cpu"))


def test_oracle_scores_zero_degrees_and_everything_within_11_25(normals_root):
    dataset = FolderNormalsDataset(normals_root, "test")
    truth = {dataset[i]["image"].tobytes(): dataset[i]["normals"] for i in range(len(dataset))}

    def oracle(image, size):
        normals = torch.from_numpy(truth[image.tobytes()])
        return torch.nn.functional.normalize(normals, dim=-1)  # the 8-bit ground truth, as a unit prediction

    result = evaluate_predictor(oracle, normals_root)
    assert result["num_images"] == 8 and result["skipped"] == 0
    assert result["mean"] == pytest.approx(0.0, abs=1e-3) and result["rmse"] == pytest.approx(0.0, abs=1e-3)
    assert result["within_11.25"] == 100.0 and result["pixel_within_11.25"] == 100.0


def constant_guess_rmse(root: Path) -> float:
    def facing(image, size):
        return torch.tensor(WALL_NORMAL).expand(*size, 3)

    return evaluate_predictor(facing, root)["rmse"]


@pytest.mark.slow
def test_frozen_probe_on_the_demo_checkpoint_reaches_its_measured_error(normals_root, tmp_path):
    from siglip2_dense.training.engine import train

    config = load_config(CONFIG, [f"model.backbone={DEMO_CHECKPOINT}", f"data.root={normals_root}",
                                  f"train.output_dir={tmp_path / 'run'}"])
    result = train(config)
    metrics = result["best"]["metrics"]
    baseline = constant_guess_rmse(normals_root)
    assert baseline == pytest.approx(53.25, abs=0.5)
    assert metrics["rmse"] == pytest.approx(34.03, abs=3.0)
    assert metrics["mean"] < 31.0 and metrics["within_30"] > 55.0
    assert metrics["rmse"] < baseline - 15.0 and math.isfinite(metrics["median"])
