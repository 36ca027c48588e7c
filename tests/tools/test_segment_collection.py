"""siglip2-dense segment over collections: files, folders and patterns; outputs that never collide; resuming;
results.jsonl; and two processes under torchrun giving exactly what one gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siglip2_dense.cli import EXIT_ERROR, run_tool
from siglip2_dense.commands import segment as segment_command
from siglip2_dense.commands.image_collection import IMAGE_SUFFIXES, collect_images, shard
from siglip2_dense.errors import DataError, MissingFileError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo-siglip2"
EXAMPLES = sorted((ROOT / "assets" / "examples").glob("*.png"))
LABELS = "background\nred circle; blue star\n\nyellow square"  # new lines separate labels too
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def collection(tmp_path) -> Path:
    """photos/{a/x.png, b/x.png, b/x.jpg, b/deep/y.png}: two x.png in different folders, two x in one."""
    root = tmp_path / "photos"
    for relative, source in (("a/x.png", 0), ("b/x.png", 1), ("b/deep/y.png", 2)):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES[source], root / relative)
    Image.open(EXAMPLES[2]).convert("RGB").resize((96, 64)).save(root / "b" / "x.jpg", quality=95)
    return root


def segment(arguments: list[str]) -> int:
    return run_tool(segment_command.run, segment_command.build_parser(), arguments)


def test_collect_images_keeps_relative_paths_and_never_collides(collection, tmp_path, monkeypatch):
    jobs = collect_images([collection], recursive=True)
    assert [job.output.as_posix() for job in jobs] == ["a/x", "b/deep/y", "b/x_jpg", "b/x_png"]
    with pytest.raises(DataError, match=r"add --recursive for sub-folders\) holds no image"):
        collect_images([collection])  # the top folder has only sub-folders
    two_files = collect_images([collection / "a" / "x.png", collection / "b" / "x.png"])
    assert [job.output.as_posix() for job in two_files] == ["a/x", "b/x"]
    assert [job.output.as_posix() for job in collect_images([collection / "a" / "x.png"])] == ["x"]
    monkeypatch.chdir(tmp_path)
    pattern = collect_images(["photos/**/*.png"], recursive=True)  # a pattern the shell did not expand
    assert [job.output.as_posix() for job in pattern] == ["a/x", "b/deep/y", "b/x"]
    assert len(collect_images([collection, collection / "a" / "x.png"], recursive=True)) == 4  # once each
    with pytest.raises(MissingFileError, match="no such image file or folder: nowhere"):
        collect_images(["nowhere"])


def test_shards_cover_every_image_exactly_once(collection):
    jobs = collect_images([collection], recursive=True)
    for world in (1, 2, 3, 5):
        shares = [shard(jobs, rank, world) for rank in range(world)]
        assert sorted(job.output for share in shares for job in share) == sorted(job.output for job in jobs)


def test_image_suffixes_agree_with_the_readers():
    from siglip2_dense.data.image_io import IMAGE_SUFFIXES as READABLE

    assert IMAGE_SUFFIXES == READABLE


def test_segment_a_folder_then_resume_only_what_is_missing(collection, tmp_path, capsys):
    out = tmp_path / "out"
    arguments = [str(collection), "--recursive", "--labels", LABELS, "--model", str(DEMO), "--out", str(out),
                 "--no-progress", "--batch-size", "2"]
    assert segment(arguments) == 0
    printed = capsys.readouterr().out
    assert f"{collection / 'b' / 'x.jpg'} (64x96, HxW)" in printed and "4 images ->" in printed
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [line["rle"] for line in lines] == ["a/x.json", "b/deep/y.json", "b/x_jpg.json", "b/x_png.json"]
    assert lines[2]["size"] == [64, 96] and lines[2]["path"] == str(collection / "b" / "x.jpg")
    for line in lines:
        assert list(line["shares"]) == ["background", "red circle", "blue star", "yellow square"]
        label_map = np.asarray(Image.open(out / line["labels"]))
        for k, share in enumerate(line["shares"].values()):
            assert share == (label_map == k).mean()  # 0.0 for labels that found nothing

    before = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    (out / "b" / "deep" / "y_overlay.png").unlink()  # as if the run had been killed while writing y
    (out / "results.jsonl").unlink()
    assert segment(arguments) == 0
    assert "4 images (3 done before)" in capsys.readouterr().out
    after = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")}
    changed = sorted(path.relative_to(out).as_posix() for path in after if after[path] != before.get(path))
    assert changed == ["b/deep/y_labels.png", "b/deep/y_overlay.png"]
    assert [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()] == lines

    other_labels = [*arguments[:3], "sky; tree", *arguments[4:]]  # other labels: nothing counts as done
    assert segment(other_labels) == 0
    assert "4 images ->" in capsys.readouterr().out


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert segment([str(tmp_path / "missing.png"), "--labels", "sky", "--model", str(DEMO)]) == EXIT_ERROR
    assert "no such image file or folder" in capsys.readouterr().err
    assert segment([str(tmp_path), "--labels", "sky", "--model", str(DEMO)]) == EXIT_ERROR
    assert "holds no image" in capsys.readouterr().err
    assert segment([str(EXAMPLES[0]), "--labels", " ;\n ", "--model", str(DEMO)]) == EXIT_ERROR
    assert "no labels given" in capsys.readouterr().err


def test_two_processes_write_exactly_what_one_writes(collection, tmp_path):
    common = [str(collection), "--recursive", "--labels", LABELS, "--model", str(DEMO), "--no-progress", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "siglip2_dense.cli", "segment", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "siglip2_dense.cli", "segment", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert len(files) == 4 * 3 + 1
    for relative in files:
        got, want = (tmp_path / "two" / relative).read_bytes(), (tmp_path / "one" / relative).read_bytes()
        if relative.suffix != ".json":  # the PNGs and results.jsonl: byte for byte
            assert got == want, relative
            continue
        # a mask's score (its mean probability) may differ in the last float digits: other images share the
        # batch in the two runs; the masks themselves are equal
        got, want = json.loads(got), json.loads(want)
        scores = [[a.pop("score") for a in coco["annotations"]] for coco in (got, want)]
        assert got == want, relative
        assert scores[0] == pytest.approx(scores[1], rel=1e-5), relative
