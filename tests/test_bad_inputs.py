"""The bad-input corpus: every entry point fed broken, odd or hostile input, each with its exact outcome.

The files are written by the tests into ``tmp_path`` (writers in ``bad_input_files.py``). An outcome is
either a documented conversion (asserted value for value) or one of the toolkit's errors, whose
message must name the file or value at fault. The command-line tools must turn every error into one
``error: ...`` line and exit code 2; two cases run a tool as a subprocess, the others call its ``main``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from bad_input_files import (
    photo,
    write_cmyk_jpeg,
    write_float_tiff,
    write_palette_png,
    write_png_header,
    write_sixteen_bit_png,
    write_truncated,
    write_with_orientation,
)
from PIL import Image, ImageOps

import siglip2_dense as sd
from siglip2_dense import OpenVocabSegmenter
from siglip2_dense.cli import EXIT_ERROR, report_error
from siglip2_dense.config import load_config
from siglip2_dense.data import ADE20KDataset, FolderSegmentationDataset, NYUv2Dataset, write_synthetic
from siglip2_dense.data.image_io import read_rgb, write_png
from siglip2_dense.errors import CheckpointError, ConfigError, DataError, MissingFileError, RequestError
from siglip2_dense.evaluation import DepthEvaluator
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.heads import build_head
from siglip2_dense.image_input import MAX_IMAGE_PIXELS
from siglip2_dense.model import CONFIG_FILE, DenseModel
from siglip2_dense.text.prompts import read_label_file
from siglip2_dense.training.checkpoint import capture_rng_state, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"bad_input_tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def error_lines(stderr: str) -> list[str]:
    """What a tool said on stderr besides progress bars (transformers' weight loading draws some)."""
    return [line for line in stderr.splitlines() if line.strip() and "it/s]" not in line]


# --- image files: what read_rgb (every data set, the tools) makes of them ---------------------------


def test_truncated_jpeg_and_png_name_the_file_and_the_format(tmp_path):
    for name, kind in (("cut.jpg", "JPEG"), ("cut.png", "PNG")):
        path = write_truncated(tmp_path / name, photo(48, 64))
        with pytest.raises(DataError, match=rf"cannot decode .*{name}: a {kind} file that is truncated or corrupt"):
            read_rgb(path)


def test_zero_byte_file_is_called_empty(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.jpg is empty \(0 bytes\)"):
        read_rgb(tmp_path / "empty.jpg")


def test_a_text_file_with_an_image_suffix_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("shopping list: milk")
    with pytest.raises(DataError, match=r"notes\.png: not an image file \(it starts with b'shopping'"):
        read_rgb(tmp_path / "notes.png")


def test_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="nowhere.jpg"):
        read_rgb(tmp_path / "nowhere.jpg")


def test_cmyk_jpeg_is_converted_exactly_as_pil_converts_it(tmp_path):
    path = write_cmyk_jpeg(tmp_path / "print.jpg", photo(40, 56))
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(read_rgb(path), expected)


@pytest.mark.parametrize("transparent_index", [None, 0])
def test_palette_png_gives_the_palette_colours_and_drops_transparency(tmp_path, transparent_index):
    path = write_palette_png(tmp_path / "palette.png", photo(30, 20), transparent_index)
    expected = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(read_rgb(path), expected)


def test_sixteen_bit_images_are_divided_by_257(tmp_path):
    values = np.random.default_rng(1).integers(0, 65536, size=(12, 10, 3)).astype(np.uint16)
    expected = np.round(values / 257.0).astype(np.uint8)
    assert np.array_equal(read_rgb(write_sixteen_bit_png(tmp_path / "rgb16.png", values)), expected)
    grey = read_rgb(write_sixteen_bit_png(tmp_path / "grey16.png", values[:, :, 0]))
    assert np.array_equal(grey, np.repeat(expected[:, :, :1], 3, axis=2))


def test_float_images_in_zero_to_one_are_scaled_by_255_and_clipped(tmp_path):
    values = np.random.default_rng(2).uniform(-0.2, 1.2, size=(8, 9, 3)).astype(np.float32)
    expected = np.round(np.clip(values.astype(np.float64), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(read_rgb(write_float_tiff(tmp_path / "float.tiff", values)), expected)


def test_exif_rotation_is_applied_for_photos_and_not_for_data_set_pixels(tmp_path):
    stored = photo(20, 30)
    path = write_with_orientation(tmp_path / "rotated.png", stored, orientation=6)
    assert np.array_equal(read_rgb(path), stored)  # a data set's labels are drawn on the stored pixels
    turned = read_rgb(path, apply_exif_orientation=True)
    assert turned.shape == (30, 20, 3)
    assert np.array_equal(turned, np.rot90(stored, k=-1))  # orientation 6: 90 degrees clockwise
    assert np.array_equal(turned, np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")))


def test_a_header_claiming_100000x100000_pixels_is_refused_before_decoding(tmp_path):
    path = write_png_header(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(DataError) as error:
        read_rgb(path)
    message = str(error.value)
    assert "bomb.png is too large to decode" in message and "10000000000 pixels" in message
    assert str(MAX_IMAGE_PIXELS) in message


def test_one_by_one_and_20000_by_20_images_decode(tmp_path):
    tiny = photo(1, 1)
    Image.fromarray(tiny).save(tmp_path / "dot.png")
    assert np.array_equal(read_rgb(tmp_path / "dot.png"), tiny)
    strip = photo(20, 20000)
    Image.fromarray(strip).save(tmp_path / "strip.png")
    assert np.array_equal(read_rgb(tmp_path / "strip.png"), strip)


# --- data sets ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_sets(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pristine-sets")
    return {name: write_synthetic(name, base / name, num=4, seed=0, size=(24, 32))
            for name in ("ade20k", "nyu-bts", "folder")}


@pytest.fixture()
def data_sets(pristine_sets, tmp_path) -> dict[str, Path]:
    """A fresh, writable copy of each synthetic data set for one test to break."""
    copies = {}
    for name, root in pristine_sets.items():
        top = tmp_path / name
        shutil.copytree(root.parent if name == "ade20k" else root, top)
        copies[name] = top / root.name if name == "ade20k" else top
    return copies


def test_ade20k_label_above_the_class_count(data_sets):
    annotation = data_sets["ade20k"] / "annotations" / "validation" / "ADE_val_00000001.png"
    write_png(annotation, np.full((24, 32), 151, dtype=np.uint8))
    with pytest.raises(DataError, match=r"ADE_val_00000001\.png holds label 151; ADE20K labels are 0\.\.150"):
        ADE20KDataset(data_sets["ade20k"], "validation")[0]


def test_folder_mask_value_above_the_class_count(data_sets):
    root = data_sets["folder"]
    write_png(root / "masks" / "00002.png", np.full((24, 32), 17, dtype=np.uint8))
    dataset = FolderSegmentationDataset(root / "images", root / "masks", root / "class_names.txt")
    with pytest.raises(DataError, match=r"00002\.png holds label 17; expected 0\.\.16 .* or 255 \(ignore\)"):
        dataset[2]


def test_image_and_label_of_different_sizes(data_sets):
    annotation = data_sets["ade20k"] / "annotations" / "validation" / "ADE_val_00000001.png"
    write_png(annotation, np.ones((20, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"size mismatch: image .*ADE_val_00000001\.jpg is 24x32 but its annotation "
                                        r".*ADE_val_00000001\.png is 20x32"):
        ADE20KDataset(data_sets["ade20k"], "validation")[0]


def test_an_rgb_label_map_is_refused(data_sets):
    annotation = data_sets["ade20k"] / "annotations" / "validation" / "ADE_val_00000001.png"
    Image.fromarray(photo(24, 32)).save(annotation)
    with pytest.raises(DataError, match=r"label map .*ADE_val_00000001\.png is uint8 with shape 24x32x3"):
        ADE20KDataset(data_sets["ade20k"], "validation")[0]


def test_eight_bit_depth_png(data_sets):
    depth = data_sets["nyu-bts"] / "official_splits" / "test" / "scene_0000" / "sync_depth_00001.png"
    write_png(depth, np.full((24, 32), 200, dtype=np.uint8))
    with pytest.raises(DataError, match=r"sync_depth_00001\.png is uint8 .* expected a single-channel 16-bit PNG"):
        NYUv2Dataset(data_sets["nyu-bts"], "test")[0]


def test_all_invalid_depth_map_is_skipped_and_counted():
    evaluator = DepthEvaluator(crop=None)
    target = torch.full((2, 6, 8), 2.0)
    target[1] = 0.0  # no measurement anywhere
    evaluator.update(torch.full((2, 6, 8), 2.2), target)
    result = evaluator.compute()
    assert result["num_images"] == 1 and result["skipped"] == 1
    assert result["abs_rel"] == pytest.approx(0.1) and result["d1"] == 1.0  # the valid image alone


def test_missing_split_file_and_split_folder(data_sets):
    (data_sets["nyu-bts"] / "nyudepthv2_test_files_with_gt.txt").unlink()
    with pytest.raises(MissingFileError, match=r"NYUv2 file list not found: .*nyudepthv2_test_files_with_gt\.txt"):
        NYUv2Dataset(data_sets["nyu-bts"], "test")
    shutil.rmtree(data_sets["ade20k"] / "annotations" / "validation")
    with pytest.raises(MissingFileError, match=r"ADE20K folder not found: .*annotations/validation"):
        ADE20KDataset(data_sets["ade20k"], "validation")


def test_empty_data_sets(data_sets):
    for image in (data_sets["ade20k"] / "images" / "validation").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"no \.jpg images in .*images/validation: the ADE20K split is empty"):
        ADE20KDataset(data_sets["ade20k"], "validation")
    (data_sets["nyu-bts"] / "nyudepthv2_test_files_with_gt.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"nyudepthv2_test_files_with_gt\.txt names no samples"):
        NYUv2Dataset(data_sets["nyu-bts"], "test")


def test_text_files_that_are_not_utf8(data_sets, tmp_path):
    root = data_sets["folder"]
    (root / "class_names.txt").write_bytes("chaise\nfenêtre\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"class names file .*class_names\.txt is not UTF-8 text \(byte 10 is b'\\xea'\)"):
        FolderSegmentationDataset(root / "images", root / "masks", root / "class_names.txt")
    (tmp_path / "labels.txt").write_bytes(b"\xff\xfecat\n")
    with pytest.raises(DataError, match=r"label file .*labels\.txt is not UTF-8 text"):
        read_label_file(tmp_path / "labels.txt")


def test_truncated_and_foreign_matlab_files(tmp_path):
    root = write_synthetic("nyu-mat", tmp_path / "nyu", num=4, seed=0, size=(24, 32))
    labeled = root / "nyu_depth_v2_labeled.mat"
    labeled.write_bytes(labeled.read_bytes()[:3000])
    with pytest.raises(DataError, match=r"cannot open .*nyu_depth_v2_labeled\.mat as HDF5 .*truncated file"):
        NYUv2Dataset(root, "test", layout="mat")
    root = write_synthetic("nyu-mat", tmp_path / "nyu2", num=4, seed=0, size=(24, 32))
    (root / "splits.mat").write_bytes(b"MATLAB? no." * 20)
    with pytest.raises(DataError, match=r"cannot read .*splits\.mat as a MATLAB file"):
        NYUv2Dataset(root, "test", layout="mat")


# --- Backbone.preprocess: what users pass as an image ---------------------------------------------


@pytest.fixture(scope="module")
def naflex(tiny_naflex_dir):
    return sd.load_backbone(str(tiny_naflex_dir))


def test_preprocess_converts_pil_modes_exactly_as_pil(naflex):
    image = Image.fromarray(photo(16, 24))
    reference = naflex.preprocess([np.array(image.convert("CMYK").convert("RGB"))])
    assert torch.equal(naflex.preprocess([image.convert("CMYK")])["pixel_values"], reference["pixel_values"])
    palette = image.convert("P")
    assert torch.equal(naflex.preprocess([palette])["pixel_values"],
                       naflex.preprocess([np.array(palette.convert("RGB"))])["pixel_values"])


def test_preprocess_sixteen_bit_and_float_arrays_follow_the_documented_rules(naflex):
    values = np.random.default_rng(3).integers(0, 65536, size=(16, 24, 3)).astype(np.uint16)
    eight = np.round(values / 257.0).astype(np.uint8)
    assert torch.equal(naflex.preprocess([values])["pixel_values"], naflex.preprocess([eight])["pixel_values"])
    floats = eight.astype(np.float32) / 255.0
    assert torch.equal(naflex.preprocess([floats])["pixel_values"], naflex.preprocess([eight])["pixel_values"])
    floats[0, 0, 0] = np.nan
    with pytest.raises(RequestError, match=r"images\[1\]: float image holds NaN or inf values"):
        naflex.preprocess([eight, floats])


def test_preprocess_applies_the_exif_rotation_of_a_pil_image(naflex, tmp_path):
    stored = photo(16, 24)
    opened = Image.open(write_with_orientation(tmp_path / "turned.png", stored, orientation=6))
    inputs = naflex.preprocess([opened])
    assert torch.equal(inputs["pixel_values"], naflex.preprocess([np.rot90(stored, k=-1)])["pixel_values"])


def test_preprocess_names_a_truncated_pil_image_and_its_file(naflex, tmp_path):
    opened = Image.open(write_truncated(tmp_path / "half.jpg", photo(48, 64)))  # PIL reads pixels lazily
    with pytest.raises(DataError, match=r"images\[0\] \(file .*half\.jpg\): cannot read its pixels: image file is truncated"):
        naflex.preprocess([opened])


def test_preprocess_of_extreme_shapes_stays_within_the_patch_budget(naflex, tiny_fixres_dir):
    inputs = naflex.preprocess([photo(1, 1), photo(20, 20000), photo(20000, 20)])
    assert inputs["spatial_shapes"].tolist() == [[8, 8], [1, 64], [64, 1]]
    features = naflex(**inputs)
    assert features.mask.sum(dim=(1, 2)).tolist() == [64, 64, 64]
    fixres = sd.load_backbone(str(tiny_fixres_dir))
    assert fixres.preprocess([photo(1, 1)])["spatial_shapes"].tolist() == [[1, 1]]  # kept at its own size
    assert fixres.preprocess([photo(20, 20000)], size=32)["pixel_values"].shape == (1, 3, 32, 32)


def test_preprocess_refuses_what_is_not_an_image(naflex):
    with pytest.raises(RequestError, match=r"images\[0\]: got str; expected a numpy array, a torch tensor or a PIL"):
        naflex.preprocess(["street.jpg"])
    with pytest.raises(RequestError, match=r"images\[0\]: shape \(0, 5, 3\) has no pixels"):
        naflex.preprocess([np.zeros((0, 5, 3), dtype=np.uint8)])
    with pytest.raises(RequestError, match="empty image list"):
        naflex.preprocess([])


# --- OpenVocabSegmenter: labels -------------------------------------------------------------------


@pytest.fixture(scope="module")
def segmenter(tiny_naflex_text_dir, tmp_path_factory):
    return OpenVocabSegmenter.from_pretrained(str(tiny_naflex_text_dir), cache_dir=tmp_path_factory.mktemp("text"))


def test_empty_and_duplicate_label_lists(segmenter):
    with pytest.raises(RequestError, match="labels: got an empty list"):
        segmenter(photo(16, 16), [])
    with pytest.raises(RequestError, match=r"duplicate label: labels\[0\] = 'Cat' and labels\[2\] = 'cat\.'"):
        segmenter(photo(16, 16), ["Cat", "dog", "cat."])


def test_a_500_character_label_is_cut_to_64_tokens_with_a_warning(segmenter, caplog):
    words = "cat dog sky tree person road grass water house ".split()
    long_label = " ".join(words[i % len(words)] for i in range(200))[:500]
    assert len(long_label) == 500
    with caplog.at_level(logging.WARNING, logger="siglip2_dense.text.encoder"):
        embedded = segmenter.encode_labels([long_label, long_label + " mountain sea floor"])
    assert any("tokens long; the text tower reads its first 64" in r.getMessage() for r in caplog.records)
    assert torch.equal(embedded.embeddings[0], embedded.embeddings[1])  # the words past token 64 are not read
    assert segmenter(photo(16, 16), [long_label, "car"]).scores.shape == (2, 16, 16)


def test_labels_in_several_scripts_keep_their_text(segmenter):
    labels = ["кошка", "猫", "قطة", "Ünïcode café", "cat"]
    result = segmenter(photo(12, 20), labels)
    assert list(result.labels) == labels
    assert result.scores.shape == (5, 12, 20) and torch.isfinite(result.scores).all()
    assert 0 <= int(result.label_map.min()) and int(result.label_map.max()) < 5


def test_segmenter_on_extreme_images(segmenter):
    assert segmenter(photo(1, 1), ["cat", "sky"]).label_map.shape == (1, 1)
    assert segmenter(photo(20, 20000), ["cat", "sky"]).label_map.shape == (20, 20000)


# --- configs --------------------------------------------------------------------------------------


def test_misspelt_config_key_names_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lrr'; valid keys in 'train': .*\blr\b.*"
                                          r"\(in the command-line overrides\)"):
        load_config(LINEAR, ["model.backbone=x", "data.root=y", "train.lrr=1e-3"])


def test_wrong_config_type_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(LINEAR.read_text().replace("iterations: 8", "iterations: many"))
    with pytest.raises(ConfigError, match=rf"config key 'train\.iterations' has a value of the wrong type.*in {path}"):
        load_config(path, ["model.backbone=x", "data.root=y"])


def test_config_that_is_not_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match=r"cannot parse .*broken\.yaml as YAML"):
        load_config(path)


# --- checkpoints ----------------------------------------------------------------------------------


@pytest.fixture()
def saved_model(naflex, tmp_path) -> Path:
    head = build_head("linear", in_channels=naflex.out_channels, num_classes=3)
    return DenseModel(naflex, head).save_pretrained(tmp_path / "model")


def test_head_checkpoint_for_another_backbone_width(saved_model, tmp_path):
    from transformers import Siglip2ImageProcessor, Siglip2VisionConfig, Siglip2VisionModel

    narrow = tmp_path / "narrow"
    Siglip2VisionModel(Siglip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                                           num_attention_heads=2, patch_size=4, num_patches=64)).save_pretrained(narrow)
    Siglip2ImageProcessor(patch_size=4, max_num_patches=64).save_pretrained(narrow)
    config = json.loads((saved_model / CONFIG_FILE).read_text())
    config["backbone"]["name_or_path"] = str(narrow)
    (saved_model / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as error:
        DenseModel.from_pretrained(saved_model)
    message = str(error.value)
    assert "classifier.weight: saved (3, 32, 1, 1), model (3, 16, 1, 1)" in message
    assert "head saved with in_channels=[32], rebuilt with in_channels=[16]" in message


def test_corrupt_safetensors_files(saved_model, tiny_naflex_dir, tmp_path):
    (saved_model / "head.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match=r"cannot read .*head\.safetensors: .*header too large.*corrupt or truncated"):
        DenseModel.from_pretrained(saved_model)
    broken = tmp_path / "broken-backbone"
    shutil.copytree(tiny_naflex_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"cannot load the vision tower of .*broken-backbone.*weight file is corrupt"):
        sd.load_backbone(str(broken))


def test_checkpoint_directories_without_their_config(saved_model, tiny_naflex_dir, tmp_path):
    (saved_model / CONFIG_FILE).unlink()
    with pytest.raises(MissingFileError, match=r"dense_model\.json does not exist; expected a directory written by"):
        DenseModel.from_pretrained(saved_model)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_naflex_dir, bare)
    (bare / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"bare' has no config\.json; expected a transformers checkpoint"):
        sd.load_backbone(str(bare))


def test_model_config_missing_a_key(saved_model):
    config = json.loads((saved_model / CONFIG_FILE).read_text())
    del config["backbone"]["name_or_path"]
    (saved_model / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"lacks the keys \['backbone\.name_or_path'\]"):
        DenseModel.from_pretrained(saved_model)


def test_step_checkpoint_with_corrupt_files_of_the_right_size(naflex, tmp_path):
    head = build_head("linear", in_channels=naflex.out_channels, num_classes=3)
    grid = HeadGrid(naflex, [head], [[0]])
    optimizer = torch.optim.AdamW(grid.heads.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    directory = save_checkpoint(tmp_path, 4, grid, optimizer, scheduler, {"seed": 0}, [capture_rng_state()], "name: x\n")
    for name, pattern in (("optimizer.json", r"cannot read .*optimizer\.json: .*corrupt, resume from another one"),
                          ("model.safetensors", r"cannot read .*model\.safetensors: .*corrupt or truncated")):
        original = (directory / name).read_bytes()
        (directory / name).write_bytes(b"{" * len(original))  # the manifest's sizes still match
        with pytest.raises(CheckpointError, match=pattern):
            load_checkpoint(directory, grid, optimizer, scheduler)
        (directory / name).write_bytes(original)


def test_feature_cache_with_a_torn_manifest(tmp_path):
    from siglip2_dense.training.feature_cache import MANIFEST, CachedFeatures

    (tmp_path / MANIFEST).write_text('{"inputs": {"storage_dtype": "float')
    with pytest.raises(DataError, match=rf"the feature cache {tmp_path} is corrupt .*delete that folder"):
        CachedFeatures(tmp_path)


# --- the command-line tools: one line, exit code 2 ------------------------------------------------


def test_train_tool_reports_a_misspelt_key_in_one_line_and_a_traceback_only_with_debug():
    command = [sys.executable, str(ROOT / "tools" / "train.py"), "--config", str(LINEAR), "train.lrr=1"]
    plain = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert plain.returncode == EXIT_ERROR
    assert error_lines(plain.stderr) == [error_lines(plain.stderr)[0]]
    assert plain.stderr.startswith("error: unknown config key 'train.lrr'")
    debug = subprocess.run([*command, "--debug"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert debug.returncode == EXIT_ERROR
    assert "Traceback (most recent call last)" in debug.stderr
    assert error_lines(debug.stderr)[-1] == error_lines(plain.stderr)[0]


def test_segment_tool_on_an_empty_image_file(tiny_naflex_text_dir, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    code = load_tool("segment").main([str(tmp_path / "empty.jpg"), "--labels", "cat; sky", "--model",
                                      str(tiny_naflex_text_dir), "--out", str(tmp_path / "out"),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert code == EXIT_ERROR
    assert error_lines(capsys.readouterr().err) == [
        f"error: image file {tmp_path / 'empty.jpg'} is empty (0 bytes); replace it with the image it should hold"]


def test_visualize_tool_on_a_decompression_bomb(tiny_naflex_dir, tmp_path, capsys):
    bomb = write_png_header(tmp_path / "bomb.png", 100_000, 100_000)
    assert load_tool("visualize_features").main([str(bomb), "--model", str(tiny_naflex_dir)]) == EXIT_ERROR
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: image {bomb} is too large to decode")


def test_eval_tool_on_a_folder_without_a_model(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert load_tool("eval").main(["--config", str(LINEAR), "--checkpoint", str(tmp_path / "run")]) == EXIT_ERROR
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'run'} holds no model to evaluate")


def test_make_synthetic_tool_with_too_few_scenes(tmp_path, capsys):
    code = load_tool("make_synthetic").main(["--format", "ade20k", "--out", str(tmp_path), "--num", "1"])
    assert code == EXIT_ERROR
    assert error_lines(capsys.readouterr().err) == ["error: num=1: write at least 2 scenes so both splits get one"]


class _CorruptImageSet(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise DataError(f"cannot decode /data/img_{index}.jpg: a JPEG file that is truncated or corrupt")


def test_an_error_in_a_data_loader_worker_is_reported_without_the_workers_traceback(capsys):
    loader = torch.utils.data.DataLoader(_CorruptImageSet(), num_workers=1)
    with pytest.raises(DataError) as error:
        next(iter(loader))
    assert "Traceback" in str(error.value)  # torch folds the worker's traceback into the message
    assert report_error(error.value, debug=False) == EXIT_ERROR
    assert error_lines(capsys.readouterr().err) == [
        "error: cannot decode /data/img_0.jpg: a JPEG file that is truncated or corrupt (raised in a DataLoader worker)"]
