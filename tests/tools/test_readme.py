"""The README's Python block runs as written against the demo checkpoint, and its short commands work."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from readme_commands import section_commands

ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_MIOU = (15.455, 15.465)  # the README's stated figure (15.46) for the synthetic train/eval commands
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)


def test_python_api_block_runs_as_written(tmp_path):
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    [block] = python_blocks()
    (tmp_path / "snippet.py").write_text(block)
    done = subprocess.run([sys.executable, "snippet.py"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[:3] == ["torch.Size([3, 128, 16, 16])", "torch.Size([3, 16, 16])",
                                            "torch.Size([3, 128])"]  # the shapes the comments state
    assert done.stdout.splitlines()[-1] == "(3, 17, 16, 16) (256, 256) (3, 4)"
    assert (tmp_path / "overlay.png").is_file() and (tmp_path / "my_probe").is_dir()


def test_license_file_matches_pyproject():
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text


def run_readme_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert command[0] == "siglip2-dense", command
    return subprocess.run([sys.executable, "-m", "siglip2_dense.cli", *command[1:]], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=900)


def test_demo_command_reproduces_the_readme_picture(tmp_path):
    for name in ("assets", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    offline = [c for c in section_commands("See it work (offline)") if "google/" not in " ".join(c)]
    assert len(offline) == 1
    done = run_readme_command(offline[0], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr == ""  # quiet: no transformers warning, no loading bar
    got = np.asarray(Image.open(tmp_path / "demo_out" / "scene_100006_overlay.png"))
    np.testing.assert_array_equal(got, np.asarray(Image.open(ROOT / "assets" / "demo.png")))


@pytest.mark.slow
def test_synthetic_train_and_eval_commands_give_the_stated_figure(tmp_path):
    for name in ("assets", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    commands = [c for c in section_commands("Train and evaluate a probe") if "/tmp/synth" in " ".join(c)
                or "/tmp/run" in " ".join(c)]
    assert [c[1] for c in commands] == ["make-synthetic", "train", "eval"]
    rewritten = [[arg.replace("/tmp/", f"{tmp_path}/") for arg in command] for command in commands]
    for command in rewritten:
        done = run_readme_command(command, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "best" / "eval_validation" / "metrics.json").read_text())["metrics"]
    assert SYNTHETIC_MIOU[0] <= metrics["mIoU"] <= SYNTHETIC_MIOU[1]
