"""Experiment configs: YAML + overrides, errors that name the key and the valid keys, every field read."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from siglip2_dense.config import (
    SECTIONS,
    ExperimentConfig,
    config_from_yaml_text,
    config_to_yaml,
    field_names,
    load_config,
    save_config,
)
from siglip2_dense.errors import ConfigError, MissingFileError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
SYNTHETIC = CONFIGS / "synthetic_linear_tiny.yaml"
REQUIRED = ["model.backbone=/ckpt", "data.root=/data"]
PUBLISHED = [
    "ade20k_linear_siglip2-b16-naflex.yaml",
    "ade20k_linear_siglip2-b16-512.yaml",
    "ade20k_linear_siglip2-so400m14-384.yaml",
    "nyu_bins_siglip2-b16-naflex.yaml",
    "nyu_dpt_siglip2-b16-naflex.yaml",
    "ade20k_linear_dinov2-b14.yaml",
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_merge_onto_the_defaults():
    config = load_config(SYNTHETIC, REQUIRED + ["train.lr=2.5e-4", "model.layers=[-2,-1]", "head.args.dropout=0.1"])
    assert isinstance(config, ExperimentConfig)
    assert config.model.backbone == "/ckpt" and config.data.root == "/data"
    assert config.train.lr == 2.5e-4 and isinstance(config.train.lr, float)
    assert config.model.layers == [-2, -1]
    assert config.head.args == {"num_classes": 17, "dropout": 0.1}
    assert config.train.iterations == 8  # from the YAML
    assert config.train.betas == [0.9, 0.999]  # a default the YAML does not set
    assert load_config(SYNTHETIC, REQUIRED + ["model.layers=3"]).model.layers == 3


def test_misspelt_key_in_the_yaml_names_it_and_lists_the_section_keys(tmp_path):
    path = write(tmp_path, "name: x\nmodel: {backbone: b}\ndata: {root: r}\ntrain: {learning_rate: 0.1}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "'train.learning_rate'" in message
    for key in field_names(SECTIONS["train"]):
        assert key in message
    assert str(path) in message


def test_misspelt_override_and_misspelt_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'eval\.mdoe'.*valid keys in 'eval': mode, crop_size"):
        load_config(SYNTHETIC, REQUIRED + ["eval.mdoe=whole"])
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; valid keys: name, task, model, head, data"):
        load_config(SYNTHETIC, REQUIRED + ["trian.lr=1"])


@pytest.mark.parametrize(
    ("override", "key"),
    [("train.lr=fast", "train.lr"), ("model.layers=[a,b]", "model.layers"), ("train.iterations=1.5", "train.iterations"),
     ("data.photometric=maybe", "data.photometric")],
)
def test_wrong_type_names_the_key(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(SYNTHETIC, REQUIRED + [override])
    assert f"'{key}'" in str(caught.value) and "wrong type" in str(caught.value)


def test_meaningless_values_name_the_valid_choices():
    with pytest.raises(ConfigError, match="eval.mode='tiled'.*valid choices: whole, slide, native"):
        load_config(SYNTHETIC, REQUIRED + ["eval.mode=tiled"])
    with pytest.raises(ConfigError, match="train.batch_size=6 is not a multiple of train.grad_accum_steps=4"):
        load_config(SYNTHETIC, REQUIRED + ["train.batch_size=6", "train.grad_accum_steps=4"])
    with pytest.raises(ConfigError, match="segmentation takes no loss arguments"):
        load_config(SYNTHETIC, REQUIRED + ["train.loss_args={scale: 1}"])


def test_missing_required_value_and_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="'model.backbone' is required"):
        load_config(SYNTHETIC, ["data.root=/data"])
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(SYNTHETIC, REQUIRED + ["train.lr"])
    with pytest.raises(MissingFileError):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips_and_leaves_no_temporary_file(tmp_path):
    config = load_config(SYNTHETIC, REQUIRED + ["train.lr_grid=[1e-3,1e-2]", "train.layer_grid=[[-1],[-2,-1]]"])
    path = save_config(config, tmp_path / "run" / "config.yaml")
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]
    assert config_from_yaml_text(path.read_text()) == config
    assert config_to_yaml(config) == path.read_text()


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_protocol_configs_load(name):
    config = load_config(CONFIGS / name)
    assert config.name == Path(name).stem
    assert config.train.output_dir is None or config.train.output_dir


def test_linear_probe_configs_follow_the_dinov2_protocol():
    for name in PUBLISHED:
        config = load_config(CONFIGS / name)
        if not name.startswith("ade20k_linear"):
            continue
        assert (config.head.name, config.model.layers, config.model.tune_last_blocks) == ("linear", 1, 0)
        assert config.head.args["num_classes"] == 150
        assert (config.train.lr, config.train.iterations, config.train.warmup_iterations) == (1e-3, 40000, 1500)
        assert (config.train.batch_size, config.data.crop_size, config.data.scale_range) == (16, [512, 512], [0.5, 2.0])
        assert (config.train.schedule, config.train.poly_power) == ("poly", 1.0)
        assert (config.eval.mode, config.eval.crop_size, config.eval.stride) == ("slide", [512, 512], [341, 341])


def attribute_reads(paths: list[Path]) -> set[str]:
    """Every ``x.name`` attribute name loaded (not assigned) in the given sources."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
                names.add(node.attr)
    return names


def test_every_config_field_is_read_by_the_package_or_the_tools():
    sources = [p for folder in ("siglip2_dense", "tools") for p in (ROOT / folder).rglob("*.py")
               if p.name != "config.py"]
    config_source = [ROOT / "siglip2_dense" / "config.py"]
    read = attribute_reads(sources)
    read_in_config = attribute_reads(config_source)
    unread = []
    for section, cls in [("", ExperimentConfig), *SECTIONS.items()]:
        for field in dataclasses.fields(cls):
            if field.name in SECTIONS:
                continue
            # output_dir is resolved by config.output_dir(); everything else must be read outside config.py
            where = read | read_in_config if field.name == "output_dir" else read
            if field.name not in where:
                unread.append(f"{section}.{field.name}".lstrip("."))
    assert unread == []
