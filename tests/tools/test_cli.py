"""The ``siglip2-dense`` entry point: every command answers --help without torch, tools/*.py are the same
commands, a missing or unknown command is one clear line, and the console script is declared."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from siglip2_dense import cli

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"segment": "segment", "train": "train", "eval": "eval", "features": "visualize_features",
         "make-synthetic": "make_synthetic", "train-demo": "train_demo_model"}
HEAVY = ("torch", "transformers", "timm", "cv2")
PROBE = """
import sys
from siglip2_dense.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as done:
    code = done.code
print("HEAVY:" + ",".join(name for name in {heavy!r} if name in sys.modules))
sys.exit(code)
"""


@pytest.mark.parametrize("arguments", [["--help"], *[[name, "--help"] for name in TOOLS]])
def test_help_answers_without_importing_torch_or_transformers(arguments):
    result = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *arguments],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("HEAVY:"), result.stdout[-300:]
    assert "usage: siglip2-dense" in result.stdout


def test_top_level_help_lists_every_command_with_its_summary(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"\n  {name} " in text
    assert "Segment images into any list of labels" in text
    assert "eval-openvocab" in cli.COMMANDS and cli.COMMANDS["eval-openvocab"] == "siglip2_dense.openvocab.benchmark_table"


def test_unknown_and_missing_commands_are_one_line_errors(capsys, monkeypatch):
    assert cli.main(["segmnet", "x.png"]) == cli.EXIT_ERROR
    assert "unknown command 'segmnet'; valid commands: segment, train" in capsys.readouterr().err
    monkeypatch.setitem(cli.COMMANDS, "ghost", "siglip2_dense.commands.no_such_command")
    assert cli.main(["ghost", "--help"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: command 'ghost' is not installed") and err.count("\n") == 1
    assert cli.main([]) == cli.EXIT_ERROR  # no command: the usage, and a usage error's code


def test_each_tool_script_is_the_command_of_the_same_name():
    for name, tool in TOOLS.items():
        spec = importlib.util.spec_from_file_location(f"tool_{tool}", ROOT / "tools" / f"{tool}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        command = cli.load_command(name)
        assert module.run is command.run and module.build_parser is command.build_parser, name


def test_parser_choices_listed_for_a_fast_help_agree_with_the_library():
    from siglip2_dense.commands import make_synthetic, segment
    from siglip2_dense.data.write_formats import FORMATS
    from siglip2_dense.heads.openvocab import VARIANTS
    from siglip2_dense.openvocab.segmenter import DEFAULT_CHECKPOINT, INFERENCE_MODES

    assert make_synthetic.FORMATS == FORMATS
    assert segment.VARIANTS == tuple(v for v in VARIANTS if v != "proxyclip")  # segment has no proxy backbone
    assert segment.INFERENCE_MODES == INFERENCE_MODES
    assert segment.DEFAULT_CHECKPOINT == DEFAULT_CHECKPOINT


def test_console_script_is_declared_and_runs(tmp_path):
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert [entry.value for entry in scripts if entry.name == "siglip2-dense"] == ["siglip2_dense.cli:main"]
    result = subprocess.run([sys.executable, "-m", "siglip2_dense.cli", "make-synthetic", "--format", "folder",
                             "--out", str(tmp_path), "--num", "2", "--size", "16x24"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote 2 folder scenes (16x24, HxW)" in result.stdout
    bad = subprocess.run([sys.executable, "-m", "siglip2_dense.cli", "make-synthetic", "--format", "folder",
                          "--out", str(tmp_path), "--num", "2", "--size", "16by24"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert bad.returncode == 2 and "is not HxW (height x width)" in bad.stderr
