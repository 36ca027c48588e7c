"""The benchmark table command (eight benchmarks, ADE-847, PC-459) on the synthetic world written in every layout, with the demo checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from ade20k_counterparts import ade20k_counterpart
from conftest import DEMO_CHECKPOINT

from siglip2_dense.data.write_formats import write_synthetic
from siglip2_dense.errors import RequestError
from siglip2_dense.openvocab import benchmark_table as table

FORMATS = ("ade20k", "voc", "context", "cocostuff", "cocoobject", "cityscapes", "ade847", "context459")
# formats whose labels hold the same 17 synthetic classes with no void band (every layout holds the same pixels)
SAME_AS_ADE = ("context60", "coco_object", "coco_stuff", "cityscapes", "context459")
# the others: a void band (VOC21, ADE-847), no background class (VOC20, PC59)
MAPPED = ("voc21", "voc20", "context59", "ade847")
PROTOCOL = {"short_side": 96, "window": 96, "stride": 64}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("openvocab-benchmarks")
    for name in FORMATS:
        write_synthetic(name, root, 8, 0, (96, 96))  # scenes 1 and 5 are the evaluation split
    return root


def run_command(root, out, *extra):
    return table.main(["--model", str(DEMO_CHECKPOINT), "--data-root", str(root), "--out", str(out),
                       "--vocabulary", "synthetic", "--templates", "single", "--short-side", str(PROTOCOL["short_side"]),
                       "--window", str(PROTOCOL["window"]), "--stride", str(PROTOCOL["stride"]),
                       "--cache-dir", str(out / "cache"), *extra])


def test_synthetic_vocabulary_follows_the_writers_class_mapping():
    voc20, stuff, voc21 = (table.synthetic_vocabulary(n) for n in ("voc20", "coco_stuff", "voc21"))
    assert len(voc20) == 20 and voc20[0] == "red circle" and voc20[15] is not None and voc20[16] is None
    assert len(stuff) == 171 and stuff[161] == "background" and stuff[0] == "red circle"
    assert voc21[0] == "background" and voc21[:17].count(None) == 0 and voc21[17:] == [None] * 4
    ade847, context459 = table.synthetic_vocabulary("ade847"), table.synthetic_vocabulary("context459")
    assert len(ade847) == 847 and ade847[5] == "background" and ade847[255] is not None and ade847[805] is not None
    assert len(context459) == 459 and context459[12] == "background" and context459[444] is not None


def test_threshold_assigns_class_zero_and_unnamed_classes_never_win():
    probabilities = torch.tensor([[[0.05, 0.6]], [[0.02, 0.3]]])  # 2 named labels, 1 x 2 pixels
    full = table.class_probabilities(probabilities, torch.tensor([1, 3]), 4)
    assert full[0].eq(-1).all() and full[2].eq(-1).all()
    assert table.labels_from_probabilities(full, None).tolist() == [[1, 1]]
    assert table.labels_from_probabilities(full, 0.1).tolist() == [[0, 1]]


def test_table_on_every_layout_and_formats_agree_with_ade20k(synthetic_root, tmp_path, capsys):
    assert run_command(synthetic_root, tmp_path, "--benchmarks", "all", "--background-threshold", "none") == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / table.TABLE_JSON).read_text())
    results = record["rows"][0]["results"]
    assert sorted(results) == sorted(table.COLUMNS) and all(r["num_images"] == 2 for r in results.values())
    ade = results["ade20k"]
    for name in SAME_AS_ADE:  # same scenes, same classes, same pixels: the same figure
        assert abs(results[name]["mIoU"] - ade["mIoU"]) <= 0.01, name
    # every layout against the ADE20K-layout files scored with that layout's labels and vocabulary
    segmenter = table.load_segmenter(table.build_parser().parse_args(
        ["--model", str(DEMO_CHECKPOINT), "--data-root", str(synthetic_root), "--templates", "single",
         "--cache-dir", str(tmp_path / "cache")]))
    counterparts = {name: ade20k_counterpart(segmenter, synthetic_root, name, **PROTOCOL) for name in table.COLUMNS}
    for name in table.COLUMNS:
        print(f"{name}: {results[name]['mIoU']} vs ADE20K layout labelled as {name}: {counterparts[name]['mIoU']}")
        assert abs(results[name]["mIoU"] - counterparts[name]["mIoU"]) <= 0.01, name
    for name in MAPPED:  # the mapping matters: without it these layouts would not match ADE20K's plain figure
        assert abs(counterparts[name]["mIoU"] - ade["mIoU"]) > 0.1, name
    assert results["voc21"]["IoU"]["background"] is not None and len(results["coco_stuff"]["IoU"]) == 171
    averaged = [results[n]["mIoU"] for n in table.AVERAGED]  # the eight; ADE-847 and PC-459 stay outside
    assert record["rows"][0]["average"] == pytest.approx(sum(averaged) / 8, abs=0.01)
    markdown = (tmp_path / table.TABLE_MARKDOWN).read_text()
    assert markdown.splitlines()[0] == ("| run | VOC21 | PC60 | Object | VOC20 | City | PC59 | ADE | Stuff | Avg "
                                        "| A-847 | PC-459 |")
    assert markdown.strip().splitlines()[-1] in printed
    assert f"| {ade['mIoU']:.1f} |" in markdown.splitlines()[2]


def test_missing_data_is_skipped_and_rows_accumulate(synthetic_root, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_command(empty, tmp_path, "--benchmarks", "voc21,ade20k", "--name", "nothing") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"voc21: skipped, no data at {empty / 'VOCdevkit/VOC2012'} (put the PascalVOCDataset folder "
                        "there; see the README's data set list)")
    assert run_command(synthetic_root, tmp_path, "--benchmarks", "ade20k", "--variant", "sclip", "--pamr",
                       "--name", "sclip pamr") == 0
    rows = json.loads((tmp_path / table.TABLE_JSON).read_text())["rows"]
    assert [r["name"] for r in rows] == ["nothing", "sclip pamr"] and rows[1]["pamr"] is True
    assert rows[0]["results"] == {} and rows[1]["results"]["ade20k"]["mIoU"] > 0


def test_refuses_unknown_benchmarks_and_bad_thresholds():
    with pytest.raises(RequestError, match="unknown benchmark 'voc'"):
        table.resolve_benchmarks("voc21,voc")
    assert table.resolve_benchmarks("ade20k,voc21") == ["voc21", "ade20k"]  # the table's column order
    with pytest.raises(RequestError, match="probability"):
        table._threshold("2", "voc21")
    assert table._threshold(None, "voc21") == 0.1 and table._threshold("0.3", "ade20k") is None


def test_cli_dispatch_reaches_the_command(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "siglip2_dense.cli", "eval-openvocab", "--benchmarks", "voc",
                                "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "unknown benchmark 'voc'" in completed.stderr


def test_table3_row_has_catseg_columns_in_the_papers_order():
    assert table.resolve_benchmarks("table3") == ["voc21", "voc20", "context59", "ade20k", "ade847", "context459"]
    text = table.table3_row("run", {"voc20": {"mIoU": 97.04}, "ade847": {"mIoU": 14.26}})
    header, _, row = text.strip().splitlines()
    assert header == "| run | A-847 | PC-459 | A-150 | PC-59 | VOC-20 | VOC-21 |"
    assert row == "| run | 14.3 | – | – | – | 97.0 | – |"
