"""Own data end to end: the folder layouts that data.dataset=folder reads, and the README's "Train on your own
data" commands run as written (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from readme_commands import section_commands

from siglip2_dense.data.folder import open_folder_split
from siglip2_dense.data.scene_splits import is_evaluation_scene
from siglip2_dense.data.synthetic import SyntheticDataset
from siglip2_dense.data.write_formats import write_synthetic
from siglip2_dense.errors import MissingFileError

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_synthetic_folder_splits_read_back_exactly(tmp_path):
    root = write_synthetic("folder", tmp_path, 8, seed=3, size=(24, 32))
    scenes = SyntheticDataset(8, 3, (24, 32))
    for split, evaluation in (("training", False), ("validation", True)):
        data = open_folder_split(root, split)
        wanted = [i for i in range(8) if is_evaluation_scene(i) == evaluation]
        assert [Path(item["path"]).stem for item in data] == [f"{i:05d}" for i in wanted]
        for item, index in zip(data, wanted):
            np.testing.assert_array_equal(item["mask"], scenes[index]["mask"])


def test_split_folders_work_too_and_a_missing_split_names_both_layouts(tmp_path):
    flat = write_synthetic("folder", tmp_path / "flat", 4, size=(16, 16))
    split_root = tmp_path / "split"
    for split in ("training", "validation"):
        for kind in ("images", "masks"):
            (split_root / split / kind).mkdir(parents=True)
        for stem in (flat / f"{split}.txt").read_text().split():
            for kind in ("images", "masks"):
                (split_root / split / kind / f"{stem}.png").write_bytes((flat / kind / f"{stem}.png").read_bytes())
    (split_root / "class_names.txt").write_bytes((flat / "class_names.txt").read_bytes())
    assert len(open_folder_split(split_root, "validation")) == len(open_folder_split(flat, "validation")) == 1
    with pytest.raises(MissingFileError, match=r"no split 'test'.*test\.txt \(one image stem per line\)"):
        open_folder_split(flat, "test")
    (flat / "validation.txt").write_text("00001\nmissing\n")
    with pytest.raises(MissingFileError, match="no image named 'missing'"):
        open_folder_split(flat, "validation")


@pytest.mark.slow
def test_readme_own_data_commands_run_as_written(tmp_path):
    for name in ("configs", "assets"):
        (tmp_path / name).symlink_to(ROOT / name)
    commands = section_commands("Train on your own data")
    assert [command[:2] for command in commands] == [["siglip2-dense", "make-synthetic"], ["siglip2-dense", "train"],
                                                     ["siglip2-dense", "eval"]]
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "siglip2_dense.cli", *command[1:]], cwd=tmp_path, env=ENV,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "my_probe"
    assert {"config.yaml", "log.jsonl", "checkpoints", "best"} <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "best" / "eval_validation" / "metrics.json").read_text())["metrics"]
    assert metrics["mIoU"] == pytest.approx(17.7, abs=0.05)  # the figure the README states
    assert len(list((run / "pictures").iterdir())) == 8  # one per validation image (scenes 1, 5, ..., 29)
