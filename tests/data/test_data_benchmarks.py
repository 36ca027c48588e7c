"""The benchmark registry: eight rows (and ADE-847, PC-459), each class-name file as long as its data set's class list."""

from __future__ import annotations

import pytest

from siglip2_dense.data import BENCHMARKS, benchmark_class_names, build_benchmark_dataset
from siglip2_dense.data.write_pascal import write_voc
from siglip2_dense.errors import RequestError
from siglip2_dense.text.prompts import read_label_file

# typed from the SCLIP configs (cfg_*.py: Resize scale's short side, prob_thd)
EXPECTED = {
    "voc21": (21, 336, 0.1), "voc20": (20, 336, None), "context60": (60, 336, 0.1), "context59": (59, 336, None),
    "coco_object": (81, 336, 0.1), "coco_stuff": (171, 448, None), "cityscapes": (19, 560, None),
    "ade20k": (150, 336, None),
    # no SCLIP config: the parent data set's settings (cfg_ade20k.py, cfg_context59.py)
    "ade847": (847, 336, None), "context459": (459, 336, None),
}  # fmt: skip


def test_registry_lists_the_benchmarks_with_the_reference_protocol():
    assert set(BENCHMARKS) == set(EXPECTED)
    for name, (classes, short_side, threshold) in EXPECTED.items():
        row = BENCHMARKS[name]
        assert len(benchmark_class_names(name)) == classes == len(row.dataset.class_names), name
        assert (row.short_side, row.background_threshold, row.window, row.stride) == (short_side, threshold, 224, 112)


def test_with_background_rows_put_background_first():
    for name, row in BENCHMARKS.items():
        first_dataset_class = row.dataset.class_names[0]
        assert (row.background_threshold is not None) == (first_dataset_class == "background"), name


def test_synonyms_as_the_lineage_wrote_them():
    assert benchmark_class_names("voc21")[4] == "ship"  # VOC's "boat", as SCLIP prompts it
    assert benchmark_class_names("voc20")[14].startswith("person, person in shirt")
    assert benchmark_class_names("voc21")[0].startswith("sky, wall, tree")  # background's synonyms
    assert benchmark_class_names("context60")[-1] == "wood"  # trailing space in the source dropped
    assert read_label_file("class_names/sclip_coco_stuff") == list(benchmark_class_names("coco_stuff"))


def test_build_the_evaluation_split(tmp_path):
    root = write_voc(tmp_path, 6, 0, (24, 24))
    assert len(build_benchmark_dataset("voc21", root)) == 2
    with pytest.raises(RequestError, match="voc21, voc20"):
        build_benchmark_dataset("voc", root)
