"""tools/make_synthetic.py, run as a user would, writes every format the loaders read back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siglip2_dense.data import ADE20KDataset, NYUv2Dataset, SyntheticDataset
from siglip2_dense.data.write_formats import FORMATS, write_synthetic
from siglip2_dense.errors import RequestError

REPO = Path(__file__).resolve().parents[2]


def test_command_line_tool_writes_a_readable_ade20k_set(tmp_path):
    command = [sys.executable, str(REPO / "tools" / "make_synthetic.py"), "--format", "ade20k"]
    command += ["--out", str(tmp_path), "--num", "6", "--seed", "7", "--size", "24x40"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 6 ade20k scenes" in result.stdout
    val = ADE20KDataset(tmp_path / "ADEChallengeData2016", "validation")
    assert len(val) == 2  # scenes 1 and 5
    np.testing.assert_array_equal(val[1]["mask"], SyntheticDataset(6, 7, (24, 40))[5]["mask"])


@pytest.mark.parametrize("format_name", ["ade20k", "nyu-bts", "nyu-mat", "folder"])  # the benchmark formats: test_data_formats_agree.py
def test_every_format_round_trips_its_targets(tmp_path, format_name):
    root = write_synthetic(format_name, tmp_path, 2, seed=1, size=(20, 28))
    scene = SyntheticDataset(2, 1, (20, 28))[1]  # scene 1 is in the evaluation split
    if format_name == "ade20k":
        np.testing.assert_array_equal(ADE20KDataset(root, "validation")[0]["mask"], scene["mask"])
    elif format_name == "folder":
        assert (root / "masks" / "00001.png").is_file() and (root / "class_names.txt").is_file()
    else:
        depth = NYUv2Dataset(root, "test", format_name.split("-")[1])[0]["depth"]
        np.testing.assert_allclose(depth, scene["depth"], atol=0.0005 + 1e-6)


def test_command_line_tool_writes_the_benchmark_formats(tmp_path):
    command = [sys.executable, str(REPO / "tools" / "make_synthetic.py"), "--format", "cocoobject"]
    command += ["--out", str(tmp_path), "--num", "2", "--size", "20x24"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    root = tmp_path / "coco_stuff164k"
    assert (root / "annotations" / "val2017" / "000000000001_instanceTrainIds.png").is_file()
    assert (root / "annotations" / "instances_val2017.json").is_file()
    assert set(FORMATS) >= {"voc", "context", "cocostuff", "cocoobject", "cityscapes"}


def test_unknown_format_and_too_few_scenes(tmp_path):
    with pytest.raises(RequestError, match="ade20k, nyu-bts, nyu-mat, folder"):
        write_synthetic("coco", tmp_path, 4)
    with pytest.raises(RequestError, match="num=1"):
        write_synthetic("ade20k", tmp_path, 1)
    assert not any(tmp_path.iterdir())  # nothing half-written
