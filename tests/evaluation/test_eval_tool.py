"""tools/eval.py end to end: segmentation (1 process and torchrun 2 processes), depth, zero-shot, a training
run's best and last checkpoints, and the one-line errors. Expected numbers are computed here independently:
the library's sliding window / whole-image pieces and the evaluators, not the evaluation loop under test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_close_with_missing
from PIL import Image

from siglip2_dense import DenseModel, load_backbone
from siglip2_dense.config import load_config
from siglip2_dense.data import ADE20KDataset, NYUv2Dataset, build_segmentation_eval_transform, write_synthetic
from siglip2_dense.data.labels import distinct_palette
from siglip2_dense.evaluation import DepthEvaluator, SegmentationEvaluator
from siglip2_dense.evaluation.colour_maps import colour_table
from siglip2_dense.evaluation.grid_to_pixels import outputs_to_pixels, tensor_to_images
from siglip2_dense.evaluation.pictures import title_height
from siglip2_dense.heads import build_head
from siglip2_dense.inference import slide_window
from siglip2_dense.picture_text import row_height

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"  # slide 32 / 21, short side 64, 64 patches
BINS = ROOT / "configs" / "synthetic_bins_tiny.yaml"  # whole image, no crop
ZERO_SHOT = ROOT / "configs" / "zeroshot" / "ade20k_siglip2-b16-naflex.yaml"
TINY_ZERO_SHOT = ["data.short_side=64", "eval.crop_size=[32,32]", "eval.stride=[21,21]", "model.max_num_patches=64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


eval_tool = load_tool("eval")


def viridis(depth: np.ndarray, low: float, high: float) -> np.ndarray:
    return colour_table("viridis")[np.round(np.clip((depth - low) / (high - low), 0, 1) * 255).astype(int)]


def assert_segmentation_metrics(got: dict, want: dict) -> None:
    for key in ("mIoU", "mAcc", "aAcc"):
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
    for key in ("IoU", "Acc"):
        assert_close_with_missing(got[key], want[key], rel=1e-12, what=key)


@pytest.fixture(scope="module")
def ade_root(tmp_path_factory) -> Path:
    # 3 validation scenes (1, 5, 9), two shapes; the eval transform resizes them to short side 64
    return write_synthetic("ade20k", tmp_path_factory.mktemp("ade"), num=12, seed=3, size=[(40, 56), (56, 40)])


@pytest.fixture(scope="module")
def segmentation_checkpoint(tiny_naflex_dir, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    backbone = load_backbone(str(tiny_naflex_dir))
    head = build_head("linear", in_channels=backbone.out_channels, num_classes=17)
    with torch.no_grad():  # running statistics that are not the identity, so a lost BatchNorm would show
        head.norm.running_mean.uniform_(-0.5, 0.5)
    return DenseModel(backbone, head).save_pretrained(tmp_path_factory.mktemp("seg-model"))


@pytest.fixture(scope="module")
def expected_segmentation(segmentation_checkpoint, ade_root):
    """Per image: the library's slide_window over the tiny model, resized to the label map, argmax."""
    model = DenseModel.from_pretrained(segmentation_checkpoint)
    resize = build_segmentation_eval_transform(64, 256)
    evaluator = SegmentationEvaluator(num_classes=17, ignore_index=255)
    predictions = {}

    def window(pixels: torch.Tensor) -> torch.Tensor:
        inputs = model.backbone.preprocess(tensor_to_images(pixels), max_num_patches=64)
        return outputs_to_pixels(model(**inputs), inputs["spatial_shapes"], tuple(pixels.shape[-2:]), 4, True)

    dataset = ADE20KDataset(ade_root, "validation")
    with torch.inference_mode():
        for index in range(len(dataset)):
            item = dataset[index]
            image = torch.from_numpy(resize(item)["image"]).permute(2, 0, 1)[None].float()
            logits = slide_window(window, image, (32, 32), (21, 21))
            prediction = F.interpolate(logits, size=item["mask"].shape, mode="bilinear").argmax(1)
            evaluator.update(prediction, torch.from_numpy(item["mask"])[None].long())
            predictions[index] = (item, prediction[0].numpy())
    return evaluator.compute(), predictions


def eval_command(checkpoint: Path, ade_root: Path, out: Path, show: Path) -> list[str]:
    return [str(ROOT / "tools" / "eval.py"), "--config", str(LINEAR), "--checkpoint", str(checkpoint),
            "--out", str(out), "--show-dir", str(show), f"data.root={ade_root}"]


@pytest.fixture(scope="module")
def single_process_run(segmentation_checkpoint, ade_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("eval-1")
    completed = subprocess.run([sys.executable, *eval_command(segmentation_checkpoint, ade_root, run / "out",
                                                              run / "show")],
                               cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "mIoU" in completed.stdout and "red circle" in completed.stdout  # the table is printed
    return run


# --- segmentation ------------------------------------------------------------------------------------


def test_segmentation_metrics_equal_an_independent_evaluation(single_process_run, expected_segmentation, ade_root):
    record = json.loads((single_process_run / "out" / "metrics.json").read_text())
    want, _ = expected_segmentation
    assert_segmentation_metrics(record["metrics"], want)
    assert record["task"] == "segmentation" and record["model"]["kind"] == "dense"
    assert record["model"]["head"] == "linear"
    assert record["data"] == {"dataset": "ade20k", "root": str(ade_root), "split": "validation", "num_images": 3}
    assert record["eval"]["mode"] == "slide" and record["eval"]["crop_size"] == [32, 32]
    names = (ade_root / "class_names.txt").read_text().split("\n")
    assert record["class_names"] == [n for n in names if n]
    table = (single_process_run / "out" / "metrics.txt").read_text().splitlines()
    row = next(line for line in table if line.split()[:3] == ["1", "red", "circle"])
    iou = record["metrics"]["IoU"][1]
    assert row.split()[3] == ("-" if iou is None else f"{iou:.2f}")


def test_segmentation_pictures_show_image_ground_truth_and_prediction(single_process_run, expected_segmentation):
    _, predictions = expected_segmentation
    pictures = sorted((single_process_run / "show").iterdir())
    assert [p.name for p in pictures] == [f"{i:05d}_{Path(item['path']).stem}.png"
                                          for i, (item, _) in sorted(predictions.items())]
    palette = distinct_palette(17)  # the data set names its own 17 classes: not ADE20K's palette
    for path, (item, prediction) in zip(pictures, (predictions[i] for i in sorted(predictions))):
        whole = np.asarray(Image.open(path).convert("RGB"))
        height, width = item["mask"].shape
        top = title_height(height)
        legend = whole[top:, 3 * width:]  # a legend of the classes present, sized to the picture
        assert whole.shape[1] > 3 * width and whole.shape[0] >= top + height
        picture = whole[top : top + height, : 3 * width]
        np.testing.assert_array_equal(picture[:, width : 2 * width], palette[item["mask"]])
        np.testing.assert_array_equal(picture[:, 2 * width :], palette[prediction])
        assert np.abs(picture[:, :width].astype(int) - item["image"].astype(int)).mean() < 12  # resized back
        for k in set(np.unique(prediction)) | set(np.unique(item["mask"])) - {255}:  # each class present: a swatch
            assert (legend.reshape(-1, 3) == palette[k]).all(axis=1).sum() >= row_height(height) ** 2 // 2, k
        assert (whole[:top] < 128).any()  # the title's text


def test_two_processes_write_the_one_process_files(single_process_run, segmentation_checkpoint, ade_root, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               *eval_command(segmentation_checkpoint, ade_root, tmp_path / "out", tmp_path / "show")]
    completed = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for name in ("metrics.json", "metrics.txt"):
        assert (tmp_path / "out" / name).read_bytes() == (single_process_run / "out" / name).read_bytes(), name
    one = {p.name: p.read_bytes() for p in (single_process_run / "show").iterdir()}
    two = {p.name: p.read_bytes() for p in (tmp_path / "show").iterdir()}
    assert two == one  # each process drew its own images; together all of them


# --- streamed sliding window -----------------------------------------------------------------------------


def test_running_argmax_over_class_chunks_keeps_the_first_of_ties(rng):
    from siglip2_dense.evaluation.slide_labels import merge_argmax

    scores = torch.from_numpy(rng.integers(0, 3, size=(10, 7, 9))).float()  # many ties
    best = labels = None
    for start in range(0, 10, 3):
        best, labels = merge_argmax(best, labels, scores[start : start + 3], start)
    assert torch.equal(labels, scores.argmax(dim=0)) and torch.equal(best, scores.max(dim=0).values)


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 4 * 64 * 90])  # one class at a time; three at a time
def test_streamed_slide_labels_equal_the_full_score_argmax(segmentation_checkpoint, ade_root, chunk_bytes):
    from siglip2_dense.evaluation.protocols import predict_image
    from siglip2_dense.evaluation.slide_labels import slide_window_labels
    from siglip2_dense.head_grid import HeadGrid

    config = load_config(LINEAR, ["model.backbone=x", f"data.root={ade_root}"])
    model = DenseModel.from_pretrained(segmentation_checkpoint)
    grid = HeadGrid(model.backbone, [model.head], [[0]])
    item = ADE20KDataset(ade_root, "validation", transform=build_segmentation_eval_transform(64, 256))[1]
    with torch.inference_mode():
        scores = predict_image(grid, item["image"], config, torch.device("cpu"))
        want = F.interpolate(scores[None], size=item["mask"].shape, mode="bilinear")[0].argmax(0)
        got = slide_window_labels(model, item["image"], item["mask"].shape, (32, 32), (21, 21), 64, chunk_bytes)
    assert torch.equal(got, want)


# --- depth ---------------------------------------------------------------------------------------------


def test_depth_end_to_end_with_a_bins_head(tiny_naflex_dir, tmp_path, capsys):
    nyu_root = write_synthetic("nyu-bts", tmp_path / "nyu", num=8, seed=1, size=(48, 64))
    torch.manual_seed(1)
    backbone = load_backbone(str(tiny_naflex_dir))
    head = build_head("bins", in_channels=backbone.out_channels, min_depth=1e-3, max_depth=10.0, num_bins=64)
    checkpoint = DenseModel(backbone, head).save_pretrained(tmp_path / "depth-model")
    code = eval_tool.main(["--config", str(BINS), "--checkpoint", str(checkpoint), "--show-dir", str(tmp_path / "show"),
                           "--no-progress", f"data.root={nyu_root}"])
    assert code == 0
    assert "abs_rel" in capsys.readouterr().out
    record = json.loads((checkpoint / "eval_test" / "metrics.json").read_text())  # the default --out

    model = DenseModel.from_pretrained(checkpoint)
    evaluator = DepthEvaluator(min_depth=1e-3, max_depth=10.0, crop=None)
    dataset = NYUv2Dataset(nyu_root, split="test")
    pictures = sorted((tmp_path / "show").iterdir())
    assert len(dataset) == len(pictures) == 2
    with torch.inference_mode():
        for item, path in zip(dataset, pictures):
            inputs = model.backbone.preprocess([item["image"]], max_num_patches=64)
            depth = outputs_to_pixels(model(**inputs), inputs["spatial_shapes"], item["depth"].shape, 4, True)[0, 0]
            evaluator.update(depth, torch.from_numpy(item["depth"]))
            whole = np.asarray(Image.open(path).convert("RGB"))
            height, width = item["depth"].shape
            top = title_height(height)
            picture = whole[top : top + height, : 3 * width]
            valid = (item["depth"] > 1e-3) & (item["depth"] < 10.0)
            low, high = item["depth"][valid].min(), item["depth"][valid].max()
            bar = whole[top : top + height, 3 * width + 2]  # the colour bar: high at the top, low at the bottom
            np.testing.assert_array_equal(bar[[0, -1]], viridis(np.array([high, low]), low, high))
            np.testing.assert_array_equal(picture[:, width : 2 * width][~valid], 0)  # invalid ground truth: black
            np.testing.assert_array_equal(picture[:, width : 2 * width][valid], viridis(item["depth"][valid], low, high))
            predicted = picture[:, 2 * width :].reshape(-1, 3)  # the same scale as the ground truth
            expected = viridis(depth.double().numpy(), low, high).reshape(-1, 3)
            assert (np.abs(predicted.astype(int) - expected.astype(int)).max(axis=1) > 8).mean() < 0.01
    want = evaluator.compute()
    for key in ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"):
        assert record["metrics"][key] == pytest.approx(want[key], rel=1e-5), key
    assert record["metrics"]["num_images"] == 2 and record["eval"]["depth_crop"] is None


# --- zero-shot -----------------------------------------------------------------------------------------


def test_zero_shot_equals_the_segmenter_and_open_vocab_switch_agrees(tiny_naflex_text_dir, ade_root, tmp_path):
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter

    names = [n for n in (ade_root / "class_names.txt").read_text().splitlines() if n]
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("# synthetic classes\n" + "\n".join(names) + "\n")
    cache = tmp_path / "text-cache"
    common = ["--text-cache-dir", str(cache), "--no-progress", f"data.root={ade_root}", *TINY_ZERO_SHOT]
    assert eval_tool.main(["--config", str(ZERO_SHOT), "--out", str(tmp_path / "config"), *common,
                           f"model.backbone={tiny_naflex_text_dir}", f"head.args.labels={labels_file}"]) == 0
    # the same through --open-vocab on the training config: labels default to the data set's class names
    assert eval_tool.main(["--config", str(LINEAR), "--open-vocab", str(tiny_naflex_text_dir),
                           "--out", str(tmp_path / "switch"), *common]) == 0
    record = json.loads((tmp_path / "config" / "metrics.json").read_text())
    switch = json.loads((tmp_path / "switch" / "metrics.json").read_text())
    assert record["model"] == {"kind": "open_vocab", "checkpoint": str(tiny_naflex_text_dir),
                               "templates": "single", "variant": "plain", "background_threshold": None}
    assert record["labels"] == names and switch["labels"] == names
    assert switch["metrics"] == record["metrics"]

    segmenter = OpenVocabSegmenter.from_pretrained(str(tiny_naflex_text_dir), max_num_patches=64, cache_dir=cache,
                                                   inference="slide", crop=(32, 32), stride=(21, 21))
    resize = build_segmentation_eval_transform(64, 256)
    evaluator = SegmentationEvaluator(num_classes=17)
    for item in ADE20KDataset(ade_root, "validation"):
        probabilities = segmenter.image_probabilities(resize(item)["image"], names)
        prediction = F.interpolate(probabilities[None], size=item["mask"].shape, mode="bilinear").argmax(1)
        evaluator.update(prediction, torch.from_numpy(item["mask"])[None].long())
    assert_segmentation_metrics(record["metrics"], evaluator.compute())


def test_zero_shot_label_count_must_match_the_classes(tiny_naflex_text_dir, ade_root, tmp_path, capsys):
    # the packaged ADE20K vocabulary has 150 labels; this data set names 17 classes
    code = eval_tool.main(["--config", str(ZERO_SHOT), "--no-progress", f"model.backbone={tiny_naflex_text_dir}",
                           f"data.root={ade_root}", "--out", str(tmp_path)])
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error: head.args.labels gives 150 labels but the data set has 17 "
                                               "classes; label k must name class k")


# --- a training run's folders --------------------------------------------------------------------------


def test_best_and_last_checkpoint_of_a_head_grid_run(tiny_naflex_dir, ade_root, tmp_path):
    from siglip2_dense.training.engine import train

    run = tmp_path / "run"
    overrides = [f"model.backbone={tiny_naflex_dir}", f"data.root={ade_root}", f"train.output_dir={run}",
                 "train.iterations=2", "train.val_every=0", "train.checkpoint_every=2", "train.warmup_iterations=1",
                 "train.lr_grid=[1e-4,3e-2]", "eval.mode=native"]
    best = train(load_config(LINEAR, overrides))["best"]
    step = run / "checkpoints" / "step_00000002"
    common = ["--config", str(run / "config.yaml"), "--no-progress"]
    assert eval_tool.main([*common, "--checkpoint", str(run / "best"), "--out", str(tmp_path / "best")]) == 0
    assert eval_tool.main([*common, "--checkpoint", str(step), "--out", str(tmp_path / "last")]) == 0
    other = 1 - best["head"]
    assert eval_tool.main([*common, "--checkpoint", str(step), "--head", str(other), "--out", str(tmp_path / "o")]) == 0
    from_best = json.loads((tmp_path / "best" / "metrics.json").read_text())["metrics"]
    from_last = json.loads((tmp_path / "last" / "metrics.json").read_text())["metrics"]
    from_other = json.loads((tmp_path / "o" / "metrics.json").read_text())["metrics"]
    assert from_best["mIoU"] == pytest.approx(best["value"], rel=1e-12)  # training's own validation
    assert from_last == from_best  # without --head the step checkpoint gives the best head
    assert from_other["IoU"] != from_best["IoU"]


def test_errors_are_one_line_unless_debug(tmp_path, capsys):
    arguments = ["--config", str(LINEAR), "--checkpoint", str(tmp_path), "data.root=x"]
    assert eval_tool.main(arguments) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "holds no model to evaluate" in err and len(err.strip().splitlines()) == 1
    assert eval_tool.main([*arguments, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err
