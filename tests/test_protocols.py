"""Every shipped experiment config declares the reference protocol it follows and differs from it only
where it says so (``deviations``), with a reason; the checker itself is tested on a known difference."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from siglip2_dense.config import load_config
from siglip2_dense.config_protocols import (
    NO_KNOB,
    NOT_PUBLISHED,
    effective_values,
    load_protocol,
    naflex_pixels,
    protocol_differences,
    protocol_problems,
)

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ROOT / "configs" / "protocols"
EXPERIMENTS = sorted([*(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.startswith("synthetic_")),
                      *(ROOT / "configs" / "paper_table2").glob("*.yaml")])


def test_every_protocol_file_loads_and_names_itself():
    names = sorted(p.stem for p in PROTOCOLS.glob("*.yaml"))
    assert names == ["catseg_cocostuff_vitl", "dinov2_ade20k_linear", "dinov2_nyu_dpt", "dinov2_nyu_linear", "dinov3_ade20k_linear",
                     "dinov3_nyu_linear", "tips_siglip2_depth_dpt", "tips_siglip2_depth_linear",
                     "tips_siglip2_normals_dpt", "tips_siglip2_seg_linear"]
    for name in names:
        protocol = load_protocol(name, PROTOCOLS)
        assert protocol.values and protocol.expected and protocol.reference


# Keys a config leaves to the command line (``???``), given here so the rest can be checked.
LEFT_TO_THE_USER = {"head.args.num_classes": "150", "data.root": "/data"}


def left_to_the_user(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return [f"{key}={value}" for key, value in LEFT_TO_THE_USER.items()
            if f"{key.rsplit('.', 1)[-1]}: ???" in text]


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_shipped_config_follows_its_protocol_except_where_listed(path):
    config = load_config(path, left_to_the_user(path))
    assert config.protocol is not None, f"{path.name} declares no protocol"
    assert protocol_problems(config, PROTOCOLS) == []


def test_a_difference_not_listed_is_reported_and_a_stale_deviation_too():
    config = load_config(ROOT / "configs" / "ade20k_linear_dinov2-b14.yaml")
    changed = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=2e-3))
    problems = protocol_problems(changed, PROTOCOLS)
    assert any(p.startswith("train.lr: config 0.002, protocol 0.001") for p in problems)
    stale = dataclasses.replace(config, deviations={**config.deviations, "train.iterations": "made up"})
    assert any("deviations.train.iterations: listed" in p for p in protocol_problems(stale, PROTOCOLS))


def test_head_defaults_and_missing_knobs_count_as_values():
    config = load_config(ROOT / "configs" / "ade20k_linear_dinov2-b14.yaml")
    values = effective_values(config)
    assert values["head.args.use_pooled"] is False  # the LinearHead default, not written in the YAML
    assert values["head.args.dropout_before_norm"] == 0.0  # a LinearHead default the DINOv3 protocol sets to 0.1
    protocol = load_protocol("dinov2_ade20k_linear", PROTOCOLS)
    assert protocol_differences(config, protocol) == {}
    best = dataclasses.replace(config, train=dataclasses.replace(config.train, reported_checkpoint="best"))
    assert protocol_differences(best, protocol) == {"train.reported_checkpoint": ("best", "final")}
    lacking = dataclasses.replace(protocol, values={**protocol.values, "train.a_setting_we_lack": 1})
    assert protocol_differences(config, lacking) == {"train.a_setting_we_lack": (NO_KNOB, 1)}


def test_naflex_pixels_reproduce_the_audit_figures():
    # protocol-audit.md #5: budget 1024 rescales 416x544 crops to 448x576 and 480x640 test images to 432x576;
    # 884 and 1200 patches keep both at native scale
    assert naflex_pixels((416, 544), 16, 1024) == [448, 576]
    assert naflex_pixels((480, 640), 16, 1024) == [432, 576]
    assert naflex_pixels((416, 544), 16, 884) == [416, 544]
    assert naflex_pixels((480, 640), 16, 1200) == [480, 640]


PAPER_COLUMNS = sorted((ROOT / "configs" / "paper_table2").glob("*.yaml"))


def test_paper_table2_has_every_column_for_every_backbone():
    stems = {p.stem for p in PAPER_COLUMNS}
    for column in ("pascal_linear", "ade20k_linear", "nyu_depth_dpt", "nyu_depth_bins", "navi_depth_dpt",
                   "nyu_normals_dpt", "navi_normals_dpt"):
        for backbone in ("so14-224", "so14-384", "b16-naflex"):
            assert f"{column}_siglip2-{backbone}" in stems


@pytest.mark.parametrize("path", PAPER_COLUMNS, ids=lambda p: p.stem)
def test_every_unpublished_setting_is_a_deviation_that_names_its_source(path):
    config = load_config(path)
    protocol = load_protocol(config.protocol, PROTOCOLS)
    assert config.protocol.startswith("tips_siglip2_")
    unpublished = [key for key, value in protocol.values.items() if value == NOT_PUBLISHED]
    assert unpublished, "the TIPS / SigLIP2 protocol leaves its training settings unpublished"
    for key in unpublished:
        reason = config.deviations[key]
        assert reason.startswith("not published; ") and ("Probe3D" in reason or "DINOv2" in reason
                                                         or "resolution" in reason or "slid" in reason), (key, reason)
