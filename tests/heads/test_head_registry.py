"""Every head, trained or zero-shot, is found through one registry; nothing outside it names a head."""

from __future__ import annotations

from pathlib import Path

import pytest

from siglip2_dense.build import build_head_from_config
from siglip2_dense.config import load_config
from siglip2_dense.errors import ConfigError, RequestError
from siglip2_dense.evaluation.zero_shot import ZERO_SHOT_HEAD, is_zero_shot
from siglip2_dense.heads import HEADS, OpenVocabHead, learns_from_labels

ROOT = Path(__file__).resolve().parents[2]
ZERO_SHOT_CONFIG = ROOT / "configs" / "zeroshot" / "ade20k_siglip2-b16-naflex.yaml"
TRAINED_CONFIG = ROOT / "configs" / "synthetic_linear_tiny.yaml"
REQUIRED = ["data.root=/nowhere", "model.backbone=/nowhere"]


def test_the_open_vocabulary_head_is_registered_and_learns_nothing():
    assert HEADS[ZERO_SHOT_HEAD] is OpenVocabHead
    assert [name for name in HEADS if not learns_from_labels(name)] == [ZERO_SHOT_HEAD]
    with pytest.raises(RequestError, match="unknown head 'linaer'.*linear"):
        learns_from_labels("linaer")


def test_zero_shot_is_decided_by_the_registry():
    assert is_zero_shot(load_config(ZERO_SHOT_CONFIG, ["data.root=/nowhere"]))
    assert not is_zero_shot(load_config(TRAINED_CONFIG, REQUIRED))


def test_training_a_head_that_learns_nothing_is_refused_with_the_reason():
    config = load_config(ZERO_SHOT_CONFIG, ["data.root=/nowhere"])
    with pytest.raises(ConfigError, match="'openvocab' is built from the tower's own weights"):
        build_head_from_config(config, [32])
