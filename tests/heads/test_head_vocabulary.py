"""One head vocabulary: segmentation heads take ``num_classes``, depth heads their depth range, and a
keyword a head does not take is a RequestError naming the head and its keywords; DPT models saved
with the earlier ``num_outputs`` keyword still load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import build_four_block_checkpoint, random_image, synthetic_features

import siglip2_dense as sd
from siglip2_dense.errors import RequestError
from siglip2_dense.heads import HEADS, build_head, upgrade_saved_head_config
from siglip2_dense.model import CONFIG_FILE, DenseModel

CHANNELS = [8] * 4
DEPTH = {"bins": dict(), "dpt": dict(task="depth")}


@pytest.mark.parametrize("name", ["linear", "dpt"])
def test_every_segmentation_head_takes_num_classes(name):
    features = synthetic_features([[5, 7], [6, 4]], 6, 7, seed=1, channels=8)
    head = build_head(name, in_channels=CHANNELS, num_classes=7).eval()
    with torch.no_grad():
        logits = head(features)
    assert logits.shape == (2, 7, 6, 7)
    assert head.config["num_classes"] == 7 and "num_outputs" not in head.config


@pytest.mark.parametrize("name", list(DEPTH))
def test_every_depth_head_takes_its_depth_range(name):
    features = synthetic_features([[5, 7], [6, 4]], 6, 7, seed=2, channels=8)
    head = build_head(name, in_channels=CHANNELS, min_depth=0.5, max_depth=4.0, num_bins=16, **DEPTH[name]).eval()
    with torch.no_grad():
        depth = head(features)
    real = depth[:, 0][features.mask]
    assert depth.shape == (2, 1, 6, 7) and real.min() >= 0.5 and real.max() <= 4.0
    assert (head.config["min_depth"], head.config["max_depth"], head.config["num_bins"]) == (0.5, 4.0, 16)
    assert "num_classes" not in head.config


def test_dpt_with_num_classes_and_no_backbone_channels_is_a_request_error_not_a_type_error():
    # the README's call without in_channels: before, DPT wanted num_outputs and this was a bare TypeError
    with pytest.raises(RequestError, match=r"head 'dpt' \(DPTHead\) needs 'in_channels'; its keywords are "
                                           r"in_channels \(required\) and num_classes, task"):
        build_head("dpt", num_classes=150)


@pytest.mark.parametrize("name, kwargs, unknown", [
    ("dpt", dict(num_outputs=150), "num_outputs"),
    ("bins", dict(num_classes=3), "num_classes"),
    ("linear", dict(num_classes=3, min_depth=0.1), "min_depth"),
    ("linear", dict(num_classes=3, num_class=4), "num_class"),
])
def test_a_keyword_the_head_does_not_take_names_the_head_and_its_keywords(name, kwargs, unknown):
    with pytest.raises(RequestError) as error:
        build_head(name, in_channels=CHANNELS, **kwargs)
    message = str(error.value)
    assert f"head {name!r} ({HEADS[name].__name__}) takes no keyword {unknown!r}" in message
    assert "its keywords are in_channels" in message and ("num_classes" in message or name == "bins")
    if unknown == "num_outputs":
        assert "renamed num_classes" in message


def test_dpt_refuses_the_other_tasks_keywords():
    with pytest.raises(RequestError, match=r"num_classes=1 for task='depth'.*min_depth, max_depth"):
        build_head("dpt", in_channels=CHANNELS, task="depth", num_classes=1)
    with pytest.raises(RequestError, match=r"max_depth, min_depth given for task='segmentation'"):
        build_head("dpt", in_channels=CHANNELS, num_classes=3, min_depth=0.1, max_depth=2.0)
    with pytest.raises(RequestError, match=r"num_classes=None for task='segmentation'"):
        build_head("dpt", in_channels=CHANNELS)


# what DPTHead.config held before the one vocabulary (every keyword, the class count as num_outputs)
OLD_DPT_CONFIGS = {
    "segmentation": dict(num_outputs=5, task="segmentation", features=None, reassemble_channels=None,
                         readout="ignore", pooled_channels=None, use_batchnorm=None, dropout=0.0, min_depth=0.001,
                         max_depth=10.0, num_bins=256, bin_spacing="uniform", channels_last=True),
    "depth": dict(num_outputs=1, task="depth", features=None, reassemble_channels=None, readout="ignore",
                  pooled_channels=None, use_batchnorm=None, dropout=0.0, min_depth=0.5, max_depth=4.0, num_bins=16,
                  bin_spacing="uniform", channels_last=True),
}


@pytest.mark.parametrize("task", list(OLD_DPT_CONFIGS))
def test_an_old_dpt_config_upgrades_to_the_same_head(task):
    old = {"in_channels": CHANNELS, **OLD_DPT_CONFIGS[task]}
    upgraded = upgrade_saved_head_config("dpt", old)
    assert "num_outputs" not in upgraded and old["num_outputs"] == OLD_DPT_CONFIGS[task]["num_outputs"]
    head = build_head("dpt", **upgraded)
    assert head.task == task and head.classifier.out_channels == (5 if task == "segmentation" else 16)
    assert upgrade_saved_head_config("dpt", head.config) == head.config  # today's configs pass unchanged
    assert build_head("dpt", **head.config).config == head.config


@pytest.mark.parametrize("task", list(OLD_DPT_CONFIGS))
def test_a_dpt_model_saved_with_num_outputs_still_loads(task, tmp_path_factory, tmp_path):
    checkpoint = build_four_block_checkpoint(tmp_path_factory.mktemp("four-block"), naflex=True)
    backbone = sd.load_backbone(str(checkpoint), layers=4)
    kwargs = {key: OLD_DPT_CONFIGS[task][key] for key in ("min_depth", "max_depth", "num_bins")}
    head_kwargs = dict(num_classes=5) if task == "segmentation" else dict(task="depth", **kwargs)
    torch.manual_seed(0)
    model = DenseModel(backbone, build_head("dpt", in_channels=backbone.out_channels, **head_kwargs)).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / CONFIG_FILE).read_text())
    saved["head"]["config"] = {"in_channels": list(backbone.out_channels), **OLD_DPT_CONFIGS[task]}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(saved))  # as the earlier version wrote it

    loaded = DenseModel.from_pretrained(tmp_path)
    rng = np.random.default_rng(3)
    inputs = backbone.preprocess([random_image(rng, 40, 64), random_image(rng, 24, 24)])
    with torch.no_grad():
        assert torch.equal(loaded(**inputs), model(**inputs))
