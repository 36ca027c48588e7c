"""tools/eval.py per open-vocabulary benchmark: the configs spell out the registry's protocol, and a config's
mIoU equals the eval-openvocab harness's for the same benchmark, protocol and scenes (demo checkpoint,
synthetic files in the VOC21 and Pascal Context layouts)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from conftest import DEMO_CHECKPOINT

from siglip2_dense.config import HeadConfig, load_config
from siglip2_dense.data.benchmarks import BENCHMARKS, benchmark_class_names
from siglip2_dense.data.write_formats import write_synthetic
from siglip2_dense.errors import ConfigError
from siglip2_dense.evaluation.run import run_evaluation
from siglip2_dense.evaluation.zero_shot import zero_shot_background_threshold
from siglip2_dense.openvocab import benchmark_table as table
from siglip2_dense.text.prompts import read_label_file

ZERO_SHOT = Path(__file__).resolve().parents[2] / "configs" / "zeroshot"
TABLE_CONFIGS = ZERO_SHOT / "benchmarks"
# synthetic format written for each benchmark tested end to end, and the folder under the data root
LAYOUTS = {"voc21": "voc", "context59": "context"}
# also compared with the harness (benchmark vocabulary, slow: 459 names x 80 templates): a 16-bit layout whose
# classes include 255 (ignore 65535)
WIDE_LAYOUTS = {"context459": "context459"}


def table_config(name: str) -> Path:
    return TABLE_CONFIGS / f"{name}_siglip2-b16-naflex.yaml"


# --- the configs ---------------------------------------------------------------------------------------


def test_one_table_config_per_benchmark_with_its_registered_protocol():
    assert sorted(p.name for p in TABLE_CONFIGS.glob("*.yaml")) == sorted(
        f"{name}_siglip2-b16-naflex.yaml" for name in BENCHMARKS)
    for name, benchmark in BENCHMARKS.items():
        config = load_config(table_config(name))
        args = config.head.args
        assert config.head.name == "openvocab" and config.data.dataset == name, name
        assert args["labels"] == f"class_names/{benchmark.class_names}", name
        assert read_label_file(args["labels"]) == list(benchmark_class_names(name)), name
        assert "background_threshold" in args and args["background_threshold"] == benchmark.background_threshold
        assert config.data.val_split == benchmark.split, name
        assert config.data.short_side == benchmark.short_side, name
        assert (config.eval.mode, config.eval.crop_size, config.eval.stride) == (
            "slide", [benchmark.window] * 2, [benchmark.stride] * 2), name
        assert args["templates"] == "imagenet80" and config.model.max_num_patches is None, name  # as the harness
        assert len(benchmark_class_names(name)) == len(benchmark.dataset.class_names), name


def test_every_zero_shot_config_names_a_registered_benchmark():
    configs = sorted(ZERO_SHOT.rglob("*.yaml"))
    assert len(configs) == len(BENCHMARKS) + 1
    for path in configs:
        assert load_config(path).data.dataset in BENCHMARKS, path
    # the one outside the table: ADE20K under mmsegmentation's protocol, as before the table configs
    ade = load_config(ZERO_SHOT / "ade20k_siglip2-b16-naflex.yaml")
    assert (ade.data.short_side, ade.eval.crop_size, ade.eval.stride) == (512, [512, 512], [341, 341])
    assert ade.head.args["labels"] == "ade20k_150_synonyms" and zero_shot_background_threshold(ade) is None


def test_the_threshold_defaults_to_the_registry_and_is_refused_without_background():
    voc = load_config(table_config("voc21"))
    bare = dataclasses.replace(voc, head=HeadConfig(name="openvocab", args={}))
    assert zero_shot_background_threshold(bare) == 0.1
    assert zero_shot_background_threshold(load_config(table_config("voc21"), ["head.args.background_threshold=null"])) is None
    with pytest.raises(ConfigError, match=r"background_threshold=0.2: data.dataset='context59' has no background"):
        zero_shot_background_threshold(load_config(table_config("context59"), ["head.args.background_threshold=0.2"]))
    with pytest.raises(ConfigError, match=r"background_threshold=1.5: expected a probability"):
        zero_shot_background_threshold(load_config(table_config("voc21"), ["head.args.background_threshold=1.5"]))


# --- tools/eval.py == eval-openvocab ------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    for layout in {**LAYOUTS, **WIDE_LAYOUTS}.values():
        write_synthetic(layout, root, 8, 0, (64, 64))  # scenes 1 and 5 are the evaluation split
    return root


def harness_metrics(name: str, folder: Path, cache: Path, vocabulary: str = "benchmark") -> dict:
    """What ``eval-openvocab --benchmarks <name> --vocabulary <vocabulary>`` computes on the data set in
    ``folder``, unrounded (the command's own parser, segmenter, vocabulary and threshold)."""
    args = table.build_parser().parse_args(["--model", str(DEMO_CHECKPOINT), "--data-root", str(folder.parent),
                                            "--cache-dir", str(cache), "--benchmarks", name,
                                            "--vocabulary", vocabulary])
    metrics, _ = table.benchmark_metrics(
        table.load_segmenter(args), name, folder, table.benchmark_vocabulary(name, args.vocabulary),
        table._threshold(args.background_threshold, name))
    return metrics


def eval_record(name: str, folder: Path, out: Path, cache: Path, *overrides: str, args: dict | None = None) -> dict:
    """``tools/eval.py --config <the benchmark's table config>`` in-process on the data set in ``folder``."""
    config = load_config(table_config(name), [f"model.backbone={DEMO_CHECKPOINT}", "train.device=cpu",
                                              f"data.root={folder}", *overrides])
    if args is not None:
        config = dataclasses.replace(config, head=HeadConfig(name="openvocab", args=args))
    run_evaluation(config, out=out, text_cache_dir=str(cache), progress=False)
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("name", [*sorted(LAYOUTS), *(pytest.param(n, marks=pytest.mark.slow) for n in WIDE_LAYOUTS)])
def test_eval_tool_equals_the_harness(name, data_root, tmp_path):
    cache, folder = tmp_path / "cache", data_root / table.DATA_FOLDERS[name]
    record = eval_record(name, folder, tmp_path / "config", cache)
    harness = harness_metrics(name, folder, cache)
    assert record["data"]["num_images"] == 2 and record["labels"] == list(benchmark_class_names(name))
    assert record["model"]["background_threshold"] == BENCHMARKS[name].background_threshold
    print(f"\n{name}: tools/eval.py mIoU {record['metrics']['mIoU']:.6f}, eval-openvocab {harness['mIoU']:.6f}")
    assert abs(record["metrics"]["mIoU"] - harness["mIoU"]) <= 1e-6
    # the registry alone gives the same run: no labels / threshold in head.args
    bare = eval_record(name, folder, tmp_path / "bare", cache, args={"templates": "imagenet80"})
    assert bare["labels"] == record["labels"] and bare["metrics"] == record["metrics"]


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_eval_tool_equals_the_harness_on_the_synthetic_names(name, data_root, tmp_path):
    """Names the demo model knows, so the figure is far from zero: the harness's ``--vocabulary synthetic``
    (the 17 / 16 synthetic names at the labels the files use, the benchmark's other classes never predicted)
    against tools/eval.py on the same files with those names in the data root's class_names.txt."""
    cache = tmp_path / "cache"
    folder = shutil.copytree(data_root / table.DATA_FOLDERS[name], tmp_path / "own")
    vocabulary = table.synthetic_vocabulary(name)
    names = [n for n in vocabulary if n]
    assert vocabulary[: len(names)] == names  # labels 0..len(names)-1
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    record = eval_record(name, folder, tmp_path / "out", cache, args={"templates": "imagenet80"})
    harness = harness_metrics(name, folder, cache, "synthetic")
    print(f"\n{name} (synthetic names): tools/eval.py mIoU {record['metrics']['mIoU']:.6f}, "
          f"eval-openvocab {harness['mIoU']:.6f}")
    assert record["labels"] == names and record["model"]["background_threshold"] == BENCHMARKS[name].background_threshold
    assert record["metrics"]["mIoU"] > 10 and abs(record["metrics"]["mIoU"] - harness["mIoU"]) <= 1e-6


def test_the_threshold_changes_the_voc21_figure(data_root, tmp_path):
    # so the equality above would break if either side dropped the registry's threshold
    cache = tmp_path / "cache"
    folder = data_root / table.DATA_FOLDERS["voc21"]
    with_threshold = eval_record("voc21", folder, tmp_path / "a", cache, "head.args.templates=single")
    without = eval_record("voc21", folder, tmp_path / "b", cache, "head.args.templates=single",
                          "head.args.background_threshold=null")
    assert without["model"]["background_threshold"] is None
    assert with_threshold["metrics"]["IoU"] != without["metrics"]["IoU"]


def test_data_dataset_takes_every_benchmark_and_builds_it_from_the_registry(data_root):
    from siglip2_dense.build import build_dataset
    from siglip2_dense.data import PascalContext59Dataset

    with pytest.raises(ConfigError, match=r"data.dataset='vco21' is not a valid choice; valid choices: ade20k, nyu, "
                                          r"folder, .*voc21, voc20, context60, context59, coco_object, coco_stuff"):
        load_config(table_config("voc21"), ["data.dataset=vco21"])
    config = load_config(table_config("context59"), [f"data.root={data_root / table.DATA_FOLDERS['context59']}"])
    dataset = build_dataset(config, "train")
    assert type(dataset) is PascalContext59Dataset and dataset.split == "train" and len(dataset) == 6


def test_the_16_bit_benchmarks_are_built_with_their_own_ignore_index(data_root):
    from siglip2_dense.build import build_dataset, ignore_index_of
    from siglip2_dense.data import PascalContext459Dataset

    config = load_config(table_config("context459"), [f"data.root={data_root / table.DATA_FOLDERS['context459']}"])
    dataset = build_dataset(config, config.data.val_split)
    assert type(dataset) is PascalContext459Dataset and len(dataset) == 2
    assert ignore_index_of(dataset) == 65535 and dataset[0]["mask"].max() > 255  # the evaluator leaves out 65535 only
