"""The one tower loader (siglip2_dense.towers): name resolution, an unreachable hub, error mapping, import rules.

The network is disabled by making every host lookup fail (as a DNS failure does) and counting the
lookups and the sleeps of retry loops; nothing is timed. huggingface_hub alone retries a file it
cannot reach five times with back-off (1 + 2 + 4 + 8 + 8 s) and transformers asks for several files.
Besides the loader's one request per hub id, huggingface_hub may look the hub up once more per
process, to fetch the registry behind its user-agent string (``utils/_detect_agent.py``, no retry).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siglip2_dense as sd
from siglip2_dense import TextEncoder
from siglip2_dense.errors import CheckpointError, MissingFileError

ROOT = Path(__file__).resolve().parents[1]
UNKNOWN_HUB_ID = "someorg/some-siglip2-model"
CACHED_HUB_ID = "someorg/tiny-siglip2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def network(monkeypatch, tmp_path):
    """No network and an empty Hugging Face cache; returns the host lookups and sleeps made."""
    from huggingface_hub import constants

    made: dict[str, list] = {"lookups": [], "sleeps": []}

    def failing_lookup(host, *args, **kwargs):
        made["lookups"].append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", failing_lookup)
    monkeypatch.setattr(time, "sleep", lambda seconds: made["sleeps"].append(seconds))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return made


def cache_copy(checkpoint: Path, repo_id: str) -> Path:
    """Put ``checkpoint`` into the (patched) Hugging Face cache as ``repo_id``'s main revision."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(checkpoint, repo / "snapshots" / COMMIT)
    return repo / "snapshots" / COMMIT


# --- names that are plainly paths -----------------------------------------------------------------


@pytest.mark.parametrize("load", [sd.load_backbone, TextEncoder.from_pretrained], ids=["vision", "text"])
def test_a_mistyped_local_folder_is_missing_at_once_and_never_a_hub_id(load, network, monkeypatch):
    monkeypatch.chdir(ROOT)  # where assets/demo-siglip2 is
    with pytest.raises(MissingFileError) as error:
        load("assets/demo-siglip")
    message = str(error.value)
    assert "'assets/demo-siglip' does not exist; the nearest existing folder is 'assets'" in message
    assert "did you mean 'assets/demo-siglip2'?" in message
    assert network == {"lookups": [], "sleeps": []}


@pytest.mark.parametrize("name, nearest", [
    ("./no-such-folder/ckpt", "'.' ({cwd})"),
    ("a/b/c", "'.' ({cwd})"),
    ("{tmp}/models/nothing-here/ckpt", "'{tmp}/models'"),
    ("~/models/siglip", "'{home}'"),
])
def test_paths_that_do_not_exist_name_the_nearest_folder(name, nearest, network, monkeypatch, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "cwd").mkdir()
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    name = name.format(tmp=tmp_path)
    with pytest.raises(MissingFileError) as error:
        sd.load_backbone(name)
    expected = nearest.format(tmp=tmp_path, cwd=tmp_path / "cwd", home=tmp_path / "home")
    assert f"checkpoint folder {name!r} does not exist; the nearest existing folder is {expected}" in str(error.value)
    assert network["lookups"] == []


def test_a_file_is_not_a_checkpoint_folder(tiny_naflex_dir):
    with pytest.raises(CheckpointError, match=r"config\.json' is a file; expected the checkpoint's folder"):
        sd.load_backbone(str(tiny_naflex_dir / "config.json"))


def test_an_existing_folder_without_separators_is_local(tiny_naflex_dir, network, monkeypatch):
    monkeypatch.chdir(tiny_naflex_dir.parent)
    backbone = sd.load_backbone(tiny_naflex_dir.name)
    assert backbone.name_or_path == tiny_naflex_dir.name
    assert backbone.checkpoint_dir == str(tiny_naflex_dir)
    assert network["lookups"] == []


# --- hub ids when the hub cannot be reached --------------------------------------------------------


def test_an_unreachable_hub_is_asked_once_and_said_so(network, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError) as error:
        sd.load_backbone(UNKNOWN_HUB_ID)
    message = str(error.value)
    assert message.startswith("the model hub at https://huggingface.co is unreachable (ConnectError: ")
    assert f"{UNKNOWN_HUB_ID!r} is not in the Hugging Face cache" in message
    assert "give a local folder instead" in message
    # Before: 10 host lookups and 5 back-off sleeps (1, 2, 4, 8, 8 s), 27 s in all.
    assert network["sleeps"] == [] and 1 <= len(network["lookups"]) <= 2


def test_offline_mode_asks_nothing(network, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError, match=r"^the model hub at \S+ is unreachable \(HF_HUB_OFFLINE is set\).*local folder"):
        TextEncoder.from_pretrained(UNKNOWN_HUB_ID)
    assert network == {"lookups": [], "sleeps": []}


@pytest.mark.parametrize("offline", [False, True], ids=["no-network", "HF_HUB_OFFLINE"])
def test_a_cached_hub_checkpoint_loads_without_the_hub(offline, network, monkeypatch, tiny_naflex_text_dir, tmp_path):
    from huggingface_hub import constants

    snapshot = cache_copy(tiny_naflex_text_dir, CACHED_HUB_ID)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    backbone = sd.load_backbone(CACHED_HUB_ID)
    encoder = TextEncoder.from_pretrained(CACHED_HUB_ID, cache_dir=tmp_path / "text-cache")
    assert network["sleeps"] == []
    assert network["lookups"] == [] if offline else 2 <= len(network["lookups"]) <= 3  # one request per tower
    reference = sd.load_backbone(str(tiny_naflex_text_dir))
    assert all((backbone.state_dict()[k] == v).all() for k, v in reference.state_dict().items())
    assert {path.parent for path in encoder.checkpoint_files} == {snapshot}
    assert backbone.name_or_path == CACHED_HUB_ID and backbone.checkpoint_dir is None


def test_the_segment_tool_says_so_in_one_line(network, capsys, tmp_path):
    image = tmp_path / "image.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    spec = importlib.util.spec_from_file_location("towers_segment_tool", ROOT / "tools" / "segment.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    code = tool.main(["--model", UNKNOWN_HUB_ID, "--labels", "cat;dog", "--out", str(tmp_path / "out"), str(image)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("error: the model hub at https://huggingface.co is unreachable"), lines
    assert "give a local folder instead" in lines[0]
    assert network["sleeps"] == [] and 1 <= network["lookups"].count("huggingface.co") <= 2


# --- failures of transformers mapped to the toolkit's errors ----------------------------------------


def test_weights_shaped_unlike_the_config_are_a_checkpoint_error(tiny_naflex_text_dir, tmp_path):
    directory = tmp_path / "edited"
    shutil.copytree(tiny_naflex_text_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config["vision_config"]["intermediate_size"] = 48
    config["text_config"]["intermediate_size"] = 48
    (directory / "config.json").write_text(json.dumps(config))
    # Before: transformers' RuntimeError, which the tools report as an internal error.
    with pytest.raises(CheckpointError, match=r"vision-tower weights shaped unlike its config\.json: "
                                              r"encoder\.layers\.0\.mlp\.fc1\.bias: checkpoint \(64,\), config \(48,\)"):
        sd.load_backbone(str(directory))
    with pytest.raises(CheckpointError, match=r"text-tower weights shaped unlike its config\.json"):
        TextEncoder.from_pretrained(str(directory))


# --- import rules -------------------------------------------------------------------------------------


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions (``from a import b`` gives ``a`` and ``a.b``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_backbone_and_text_do_not_import_each_other():
    package = ROOT / "siglip2_dense"
    for wing, other in (("backbone", "text"), ("text", "backbone")):
        crossing = {str(path.relative_to(ROOT)): sorted(n for n in imports_of(path) if n.startswith(f"siglip2_dense.{other}"))
                    for path in sorted((package / wing).rglob("*.py"))}
        assert {path: names for path, names in crossing.items() if names} == {}


def test_the_tower_loader_imports_only_the_error_vocabulary():
    names = imports_of(ROOT / "siglip2_dense" / "towers.py")
    toolkit = {n.split(".")[1] for n in names if n.startswith("siglip2_dense.")}
    assert toolkit == {"errors"}
