"""Commands are quiet by default (no transformers warning, no weight-loading bar) and say more with --verbose;
the demo checkpoint's token ids lie inside its vocabulary and agree with its tokenizer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo-siglip2"
EXAMPLE = ROOT / "assets" / "examples" / "scene_100006.png"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def features(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "siglip2_dense.cli", "features", str(EXAMPLE), "--model", str(DEMO),
               "--out", str(tmp_path / "pca.png"), *extra]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=180)


def test_no_third_party_noise_unless_verbose(tmp_path):
    quiet = features(tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout == f"{EXAMPLE} (256x256, HxW) -> {tmp_path / 'pca.png'}\n"
    verbose = features(tmp_path, "--verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "Loading weights" in verbose.stderr


def test_quiet_libraries_restores_what_it_changed():
    from transformers.utils import logging as transformers_logging

    from siglip2_dense.cli import quiet_libraries

    before = transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()
    with quiet_libraries():
        assert transformers_logging.get_verbosity() == transformers_logging.ERROR
        assert not transformers_logging.is_progress_bar_enabled()
    assert (transformers_logging.get_verbosity(), transformers_logging.is_progress_bar_enabled()) == before


def test_demo_config_token_ids_are_inside_the_vocabulary_and_match_the_tokenizer():
    from transformers import AutoTokenizer

    text = json.loads((DEMO / "config.json").read_text())["text_config"]
    tokenizer = AutoTokenizer.from_pretrained(DEMO)
    assert text["vocab_size"] == len(tokenizer)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if text[key] is not None:
            assert 0 <= text[key] < text["vocab_size"], key
    assert text["eos_token_id"] == tokenizer.eos_token_id and text["pad_token_id"] == tokenizer.pad_token_id
    assert text["bos_token_id"] in (None, tokenizer.bos_token_id)
