"""The demo table (slow): the demo checkpoint on the synthetic world in all ten layouts.

Prints the plain row over the ten benchmarks and, on the ADE20K layout, every variant with PAMR
off / on, sliding window and NaFlex-native. Guards: the plain figure of every layout equals, within 0.01,
the ADE20K layout's scenes scored with that layout's labels and vocabulary (the same figure as ADE20K's own
for the layouts that hold the same 17 classes with no void band; every layout holds the same pixels), and
ADE20K's stays above the known floor.
"""

from __future__ import annotations

import itertools
import json

import pytest
from ade20k_counterparts import ade20k_counterpart
from conftest import DEMO_CHECKPOINT

from siglip2_dense.data.write_formats import write_synthetic
from siglip2_dense.openvocab import benchmark_table as table

FORMATS = ("ade20k", "voc", "context", "cocostuff", "cocoobject", "cityscapes", "ade847", "context459")
COMMON = ["--vocabulary", "synthetic", "--templates", "single", "--background-threshold", "none",
          "--short-side", "336"]


@pytest.mark.slow
def test_demo_table(tmp_path):
    root = tmp_path / "data"
    for name in FORMATS:
        write_synthetic(name, root, 16, 0, (128, 128))  # 4 evaluation scenes per layout
    out = tmp_path / "table"
    base = ["--model", str(DEMO_CHECKPOINT), "--data-root", str(root), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache"), *COMMON]
    assert table.main([*base, "--benchmarks", "all", "--name", "plain slide (all layouts)"]) == 0
    for variant, pamr, inference in itertools.product(("plain", "sclip", "naclip", "clearclip", "value"),
                                                      (False, True), ("slide", "native")):
        name = f"{variant}{' +pamr' if pamr else ''} {inference}"
        extra = ["--pamr"] if pamr else []
        assert table.main([*base, "--benchmarks", "ade20k", "--variant", variant, "--inference", inference,
                           "--name", name, *extra]) == 0
    rows = json.loads((out / table.TABLE_JSON).read_text())["rows"]
    print("\n" + (out / table.TABLE_MARKDOWN).read_text())
    plain = rows[0]["results"]
    for name in ("context60", "coco_object", "coco_stuff", "cityscapes"):
        assert abs(plain[name]["mIoU"] - plain["ade20k"]["mIoU"]) <= 0.01, name
    segmenter = table.load_segmenter(table.build_parser().parse_args(
        ["--model", str(DEMO_CHECKPOINT), "--data-root", str(root), "--templates", "single",
         "--cache-dir", str(tmp_path / "cache")]))
    for name in table.COLUMNS:
        counterpart = ade20k_counterpart(segmenter, root, name, short_side=336)
        print(f"{name}: {plain[name]['mIoU']} vs ADE20K layout labelled as {name}: {counterpart['mIoU']}")
        assert abs(plain[name]["mIoU"] - counterpart["mIoU"]) <= 0.01, name
    assert plain["ade20k"]["mIoU"] >= 35.0
    assert rows[1]["name"] == "plain slide" and rows[1]["results"]["ade20k"]["mIoU"] == plain["ade20k"]["mIoU"]
