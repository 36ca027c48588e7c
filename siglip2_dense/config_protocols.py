"""Reference protocols as data, and where an experiment config departs from its protocol.

A protocol is a YAML file ``configs/protocols/<name>.yaml``::

    name: dinov2_ade20k_linear
    reference: what it transcribes (repository, file)
    expected: the published number a user with the weights should see, or why there is none
    values:                      # dotted keys, each with its source in a comment
      train.lr: 1.0e-3           # ... vitb_ade20k_linear_config.py:73  optimizer lr=0.001
      head.args.use_pooled: false
      input.train_pixels: [512, 512]

A key is an experiment key (``section.field``; ``head.args.<name>`` with the head's constructor default
when the config leaves it out), a derived ``input.*`` fact (the pixels the backbone sees for a
training crop and for an evaluation view, which a NaFlex patch budget may rescale), or a setting
of the reference that the toolkit has no key for (its value in a config is then :data:`NO_KNOB`).
A setting the reference never published is written as :data:`NOT_PUBLISHED` (with a comment saying so): no
config can match it, so every config of that protocol lists the key in ``deviations`` with the value it uses
and where that value comes from (e.g. "not published; Probe3D's value used").
An experiment declares ``protocol: <name>`` and ``deviations: {key: reason}``;
:func:`protocol_problems` lists every key where the config's value differs from the protocol's and
the key is not a listed deviation, every listed deviation that does not differ (stale), and every
deviation key the protocol does not define.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from siglip2_dense.config import ExperimentConfig, config_to_container
from siglip2_dense.errors import ConfigError, MissingFileError
from siglip2_dense.evaluation.protocols import eval_patch_budget

NO_KNOB = "<no such setting in this toolkit>"
NOT_PUBLISHED = "<not published>"
# NYUv2 test images (Eigen split, BTS layout) are 480 x 640; NAVI items are 512 x 512 (Probe3D's crop); evaluated whole
EVAL_IMAGE_SIZES = {"nyu": (480, 640), "navi": (512, 512)}
PATCH_IN_NAME = re.compile(r"patch(\d+)")


@dataclass
class Protocol:
    """One reference protocol: its name, what it transcribes, the number to expect, and its values."""

    name: str
    reference: str
    expected: str
    values: dict[str, Any]


def load_protocol(name: str, directory: str | Path) -> Protocol:
    """``<directory>/<name>.yaml`` as a :class:`Protocol`.

    Raises:
        MissingFileError: no such file. ConfigError: a missing section or a file for another name.
    """
    path = Path(directory) / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in Path(directory).glob("*.yaml"))
        raise MissingFileError(f"protocol {name!r}: {path} not found; protocols: {', '.join(known)}")
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if not isinstance(loaded, dict) or not isinstance(loaded.get("values"), dict):
        raise ConfigError(f"{path}: expected a mapping with name, reference, expected and values")
    for key in ("name", "reference", "expected"):
        if not isinstance(loaded.get(key), str):
            raise ConfigError(f"{path}: key {key!r} missing or not text")
    if loaded["name"] != name:
        raise ConfigError(f"{path}: name {loaded['name']!r} differs from its file name {name!r}")
    return Protocol(loaded["name"], loaded["reference"], loaded["expected"], dict(loaded["values"]))


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and prefix != "deviations":
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, out)
    else:
        out[prefix] = value


def head_defaults(name: str) -> dict[str, Any]:
    """The default constructor arguments of the head registered as ``name`` (none for an unknown head)."""
    from siglip2_dense.heads import HEADS

    if name not in HEADS:
        return {}
    parameters = list(inspect.signature(HEADS[name].__init__).parameters.values())[1:]
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def naflex_pixels(size: tuple[int, int], patch_size: int, budget: int) -> list[int]:
    """The ``[height, width]`` the Siglip2 processor resizes a ``size`` image to under a patch ``budget``."""
    from transformers.models.siglip2.image_processing_siglip2 import get_image_size_for_max_num_patches

    return list(get_image_size_for_max_num_patches(int(size[0]), int(size[1]), patch_size, budget))


def input_pixels(config: ExperimentConfig) -> dict[str, Any]:
    """``input.train_pixels`` / ``input.eval_pixels``: what the backbone sees of a training crop and an eval view.

    A config with a patch budget is a NaFlex config (FixRes and timm towers refuse one); its patch
    size is read from the checkpoint name (``...-patch16-naflex``), the only place it is known
    without the checkpoint. Without a budget the backbone sees the pixels as they are (FixRes
    pads to whole patches, never rescales). Unknown: None.
    """
    crop = [int(v) for v in config.data.crop_size]
    if config.eval.mode == "slide":
        view: list[int] | None = [int(v) for v in config.eval.crop_size]
    else:
        size = EVAL_IMAGE_SIZES.get(config.data.dataset)
        view = list(size) if size is not None else None
    budgets = (config.model.max_num_patches, eval_patch_budget(config))
    if budgets == (None, None):
        return {"input.train_pixels": crop, "input.eval_pixels": view}
    found = PATCH_IN_NAME.search(str(config.model.backbone))
    if found is None:
        return {"input.train_pixels": None, "input.eval_pixels": None}
    patch = int(found.group(1))
    train = crop if budgets[0] is None else naflex_pixels(crop, patch, budgets[0])
    evaluated = view if view is None or budgets[1] is None else naflex_pixels(view, patch, budgets[1])
    return {"input.train_pixels": train, "input.eval_pixels": evaluated}


def effective_values(config: ExperimentConfig) -> dict[str, Any]:
    """Every dotted key of ``config`` with the value it takes effect with (head defaults, derived inputs)."""
    values: dict[str, Any] = {}
    _flatten("", config_to_container(config), values)
    values.pop("head.args", None)  # an empty args mapping flattens to itself
    for key, default in head_defaults(config.head.name).items():
        values.setdefault(f"head.args.{key}", default)
    values.update(input_pixels(config))
    return values


def same_value(ours: Any, reference: Any) -> bool:
    """Equal, lists and tuples alike, numbers to 1e-9 relative."""
    if isinstance(ours, (list, tuple)) and isinstance(reference, (list, tuple)):
        return len(ours) == len(reference) and all(same_value(a, b) for a, b in zip(ours, reference))
    numbers = (int, float)
    if isinstance(ours, numbers) and isinstance(reference, numbers) and not isinstance(ours, bool) \
            and not isinstance(reference, bool):
        return math.isclose(float(ours), float(reference), rel_tol=1e-9, abs_tol=0.0)
    return ours == reference


def protocol_differences(config: ExperimentConfig, protocol: Protocol) -> dict[str, tuple[Any, Any]]:
    """``{key: (config value, protocol value)}`` for every protocol key where they differ."""
    values = effective_values(config)
    return {key: (values.get(key, NO_KNOB), reference) for key, reference in protocol.values.items()
            if not same_value(values.get(key, NO_KNOB), reference)}


def protocol_problems(config: ExperimentConfig, directory: str | Path) -> list[str]:
    """Why ``config`` does not reproduce its declared protocol except where it says so ([] when it does).

    Raises:
        ConfigError: the config declares no protocol.
    """
    if config.protocol is None:
        raise ConfigError(f"{config.name}: no protocol declared (protocol: <name of a file in {directory}>)")
    protocol = load_protocol(config.protocol, directory)
    differences = protocol_differences(config, protocol)
    problems = [f"{key}: config {ours!r}, protocol {theirs!r}, not listed in deviations"
                for key, (ours, theirs) in differences.items() if key not in config.deviations]
    for key, reason in config.deviations.items():
        if key not in protocol.values:
            problems.append(f"deviations.{key}: the protocol {protocol.name!r} defines no such key")
        elif key not in differences:
            problems.append(f"deviations.{key}: listed ({reason!r}) but the config follows the protocol there")
        if not str(reason).strip():
            problems.append(f"deviations.{key}: no reason given")
    return problems
