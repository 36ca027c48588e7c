"""A saved model loads from any working directory: how dense_model.json records its backbone.

Hub ids are recorded as ids; a local backbone folder as its absolute path, plus its path relative to
the model folder when it lies inside that folder or beside it, so a moved tree still loads;
``DenseModel.from_pretrained(path, backbone=...)`` overrides the record.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import random_image

import siglip2_dense as sd
from siglip2_dense.errors import MissingFileError
from siglip2_dense.head_grid import HeadGrid
from siglip2_dense.heads import build_head
from siglip2_dense.model import CONFIG_FILE, DenseModel
from siglip2_dense.training.run_files import save_best_model


def linear_model(backbone) -> DenseModel:
    torch.manual_seed(0)
    return DenseModel(backbone, build_head("linear", in_channels=backbone.out_channels, num_classes=3)).eval()


def outputs(model: DenseModel) -> torch.Tensor:
    images = [random_image(np.random.default_rng(3), 24, 36)]
    with torch.no_grad():
        return model(**model.backbone.preprocess(images))


def recorded_backbone(model_dir: Path) -> dict:
    return json.loads((model_dir / CONFIG_FILE).read_text())["backbone"]


def test_a_relative_backbone_path_is_recorded_absolute(tiny_naflex_dir, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(tiny_naflex_dir, project / "models" / "tiny")
    monkeypatch.chdir(project)
    model = linear_model(sd.load_backbone("./models/tiny"))
    model.save_pretrained("out/model")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    # Before: './models/tiny' was recorded as given, and from here it "does not exist".
    loaded = DenseModel.from_pretrained(project / "out" / "model")
    assert torch.equal(outputs(loaded), outputs(model))
    record = recorded_backbone(project / "out" / "model")
    assert record["name_or_path"] == str(project / "models" / "tiny")
    assert "relative_path" not in record  # neither inside the model folder nor beside it


@pytest.mark.parametrize("backbone_at, relative", [("model/backbone", "backbone"), ("backbone", "../backbone"),
                                                    ("checkpoints/tiny", "../checkpoints/tiny")],
                         ids=["inside", "beside", "beside-nested"])
def test_a_backbone_inside_or_beside_the_model_moves_with_it(backbone_at, relative, tiny_naflex_dir, tmp_path,
                                                           monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(tiny_naflex_dir, project / backbone_at)
    monkeypatch.chdir(project)
    model = linear_model(sd.load_backbone(backbone_at))
    model.save_pretrained("model")
    moved = tmp_path / "moved"
    shutil.move(project, moved)
    monkeypatch.chdir(tmp_path)
    # Before: the record held the folder as given, which does not exist from here.
    loaded = DenseModel.from_pretrained(moved / "model")
    assert loaded.backbone.name_or_path == str(moved / backbone_at)
    assert torch.equal(outputs(loaded), outputs(model))
    record = recorded_backbone(moved / "model")
    assert (record["name_or_path"], record["relative_path"]) == (str(project / backbone_at), relative)


def test_a_hub_id_is_recorded_as_the_id(tiny_naflex_dir, tmp_path):
    backbone = sd.load_backbone(str(tiny_naflex_dir))
    backbone.name_or_path, backbone.checkpoint_dir = "google/siglip2-base-patch16-naflex", None  # as a hub load sets them
    linear_model(backbone).save_pretrained(tmp_path / "model")
    record = recorded_backbone(tmp_path / "model")
    assert record["name_or_path"] == "google/siglip2-base-patch16-naflex" and "relative_path" not in record


def test_a_missing_backbone_names_the_path_and_the_override(tiny_naflex_dir, tmp_path):
    shutil.copytree(tiny_naflex_dir, tmp_path / "gone")
    model = linear_model(sd.load_backbone(str(tmp_path / "gone")))
    model.save_pretrained(tmp_path / "saved" / "model")
    shutil.rmtree(tmp_path / "gone")
    with pytest.raises(MissingFileError) as error:
        DenseModel.from_pretrained(tmp_path / "saved" / "model")
    message = str(error.value)
    assert f"saved from the local folder {str(tmp_path / 'gone')!r}, which is not here" in message
    assert "backbone='<its folder or hub id>'" in message
    # The override: the same checkpoint from another folder.
    loaded = DenseModel.from_pretrained(tmp_path / "saved" / "model", backbone=str(tiny_naflex_dir))
    assert loaded.backbone.name_or_path == str(tiny_naflex_dir)
    assert torch.equal(outputs(loaded), outputs(model))


def test_a_legacy_relative_record_is_found_beside_the_model(tiny_naflex_dir, tmp_path, monkeypatch):
    """Files written before relative_path existed hold the name as given: also tried from the model folder."""
    shutil.copytree(tiny_naflex_dir, tmp_path / "project" / "backbone")
    model = linear_model(sd.load_backbone(str(tmp_path / "project" / "backbone")))
    model.save_pretrained(tmp_path / "project" / "model")
    path = tmp_path / "project" / "model" / CONFIG_FILE
    config = json.loads(path.read_text())
    config["backbone"]["name_or_path"] = "../backbone"
    del config["backbone"]["relative_path"]
    path.write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    assert torch.equal(outputs(DenseModel.from_pretrained(tmp_path / "project" / "model")), outputs(model))


def test_a_runs_best_model_loads_after_the_run_folder_moves(tiny_naflex_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_naflex_dir, run / "backbone")
    monkeypatch.chdir(run)
    backbone = sd.load_backbone("backbone", layers=[1, 2])
    torch.manual_seed(0)
    heads = [build_head("linear", in_channels=[backbone.embed_dim], num_classes=3) for _ in range(2)]
    grid = HeadGrid(backbone, heads, [[0], [1]])
    save_best_model(run, grid, 1, {"step": 1, "mIoU": 12.5})
    shutil.move(run, tmp_path / "moved-run")
    monkeypatch.chdir(tmp_path)
    loaded = DenseModel.from_pretrained(tmp_path / "moved-run" / "best")
    assert recorded_backbone(tmp_path / "moved-run" / "best")["relative_path"] == "../backbone"
    assert loaded.backbone.layers == [2]
    expected = DenseModel(sd.load_backbone(str(tmp_path / "moved-run" / "backbone"), layers=[2]), heads[1]).eval()
    assert torch.equal(outputs(loaded), outputs(expected))
