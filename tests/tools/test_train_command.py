"""siglip2-dense train checks the data set and the run's folder before it loads any model, and refuses to
start over in a folder that holds a run unless told to (--resume or --overwrite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from siglip2_dense.cli import EXIT_ERROR, run_tool
from siglip2_dense.commands import train as train_command
from siglip2_dense.data.write_formats import write_synthetic
from siglip2_dense.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]
LINEAR = ROOT / "configs" / "synthetic_linear_tiny.yaml"
LOADED = "the backbone was loaded"


@pytest.fixture
def no_model_loading(monkeypatch):
    """Loading a backbone raises a known error, so a test sees whether the command got that far."""
    def refuse(*args, **kwargs):
        raise CheckpointError(LOADED)

    monkeypatch.setattr("siglip2_dense.training.engine.build_backbone", refuse)


def train_main(arguments: list[str]) -> int:
    return run_tool(train_command.run, train_command.build_parser(), arguments)


def test_a_missing_data_root_is_refused_before_any_model_is_loaded(tmp_path, capsys, no_model_loading):
    code = train_main(["--config", str(LINEAR), "model.backbone=google/no-such-checkpoint",
                       f"data.root={tmp_path / 'nowhere'}", f"train.output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and LOADED not in err
    assert str(tmp_path / "nowhere") in err and err.startswith("error: ")
    assert not (tmp_path / "run").exists()


def test_an_existing_run_folder_needs_resume_or_overwrite(tmp_path, capsys, no_model_loading):
    data = write_synthetic("ade20k", tmp_path / "data", 4, size=(32, 32))
    out = tmp_path / "run"
    (out / "eval_validation").mkdir(parents=True)
    (out / "eval_validation" / "metrics.json").write_text("{}")
    base = ["--config", str(LINEAR), "model.backbone=google/no-such-checkpoint", f"data.root={data}",
            f"train.output_dir={out}"]

    assert train_main(base) == EXIT_ERROR
    err = capsys.readouterr().err
    assert f"train.output_dir {out} already holds a run (eval_validation)" in err and "--overwrite" in err
    assert LOADED not in err and (out / "eval_validation" / "metrics.json").read_text() == "{}"

    for flag in ("--overwrite", "--resume"):  # both pass the checks and reach the model
        assert train_main([*base, flag]) == EXIT_ERROR
        assert LOADED in capsys.readouterr().err, flag
    assert train_main([*base, "train.resume=auto"]) == EXIT_ERROR  # the config's own resume counts too
    assert LOADED in capsys.readouterr().err


def test_an_empty_or_missing_run_folder_is_fine_and_a_file_is_not(tmp_path, capsys, no_model_loading):
    data = write_synthetic("ade20k", tmp_path / "data", 4, size=(32, 32))
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for out, expected in (("empty", LOADED), ("new", LOADED), ("file", "is a file; expected a folder")):
        assert train_main(["--config", str(LINEAR), "model.backbone=x", f"data.root={data}",
                           f"train.output_dir={tmp_path / out}"]) == EXIT_ERROR
        assert expected in capsys.readouterr().err, out


def test_resume_and_overwrite_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", str(LINEAR), "--resume", "--overwrite"])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
