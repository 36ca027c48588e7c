"""Dense prediction heads: each takes :class:`~siglip2_dense.backbone.features.DenseFeatures` and returns
outputs on the padded patch grid, with padded cells zero and without influence on real ones.

``HEADS`` maps a head's name to its class; :func:`build_head` builds one by name. Every head is
built from the backbone's declared channels (``in_channels=backbone.out_channels``) and records
its constructor arguments in ``head.config``, so ``DenseModel`` can save and rebuild it.

One vocabulary, as mmsegmentation's decode heads: a segmentation head takes ``num_classes``
(``linear``; ``dpt`` with ``task="segmentation"``), a depth head takes its depth range
(``min_depth``, ``max_depth``, ``num_bins``, ``bin_spacing``: ``bins``; ``dpt`` with
``task="depth"``), a normals head takes neither (3 unit components, ``uncertainty`` adds a fourth:
``linear_normals``, ``dpt_normals``). A keyword a head does not take, or a missing required one, raises
:class:`~siglip2_dense.errors.RequestError` naming the head and its keywords.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from siglip2_dense.errors import RequestError

from .cost_aggregation import CostAggregationHead
from .depth import BinsDepthHead
from .dpt import DPTHead
from .linear import LinearHead
from .normals import DPTNormalsHead, LinearNormalsHead
from .openvocab import OpenVocabHead

HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "bins": BinsDepthHead,
    "dpt": DPTHead,
    "openvocab": OpenVocabHead,  # built from the tower's own MAP head: nothing to train (zero-shot)
    "linear_normals": LinearNormalsHead,  # surface normals: 3 unit components (+ a concentration logit)
    "dpt_normals": DPTNormalsHead,
    "cost_aggregation": CostAggregationHead,  # CAT-Seg: trained on some classes' labels, scores any text
}
# keywords of earlier versions, named in the error so a user knows what to write instead
RENAMED_KEYWORDS = {"num_outputs": "renamed num_classes; a depth head takes no class count"}

__all__ = ["HEADS", "BinsDepthHead", "CostAggregationHead", "DPTHead", "DPTNormalsHead", "LinearHead", "LinearNormalsHead", "OpenVocabHead", "build_head", "head_keywords",
           "head_name", "learns_from_labels", "upgrade_saved_head_config"]


def learns_from_labels(name: str) -> bool:
    """Whether the head registered as ``name`` is trained on labelled data (``tools/train.py``), or
    built from the tower's own weights and evaluated zero-shot (``OpenVocabHead``).

    Raises:
        RequestError: ``name`` is not a registered head (the message lists the valid names).
    """
    if name not in HEADS:
        raise RequestError(f"unknown head {name!r}; expected one of {', '.join(sorted(HEADS))}")
    return bool(getattr(HEADS[name], "learns_from_labels", True))


def head_keywords(name: str) -> tuple[list[str], list[str]]:
    """``(required, optional)`` keyword names of the head registered as ``name`` (its constructor's signature)."""
    parameters = list(inspect.signature(HEADS[name].__init__).parameters.values())[1:]  # without self
    required = [p.name for p in parameters if p.default is inspect.Parameter.empty]
    optional = [p.name for p in parameters if p.default is not inspect.Parameter.empty]
    return required, optional


def build_head(name: str, **kwargs: Any) -> nn.Module:
    """Build the head registered as ``name`` in :data:`HEADS` with ``kwargs`` (its constructor arguments).

    Raises:
        RequestError: ``name`` is not a registered head (the message lists the valid names); a
            keyword the head does not take, or a required one missing (the message names the head
            and lists its keywords); or a value the head refuses.
    """
    if name not in HEADS:
        raise RequestError(f"unknown head {name!r}; expected one of {', '.join(sorted(HEADS))}")
    required, optional = head_keywords(name)
    unknown = [key for key in kwargs if key not in required + optional]
    missing = [key for key in required if key not in kwargs]
    if unknown or missing:
        problems = [f"takes no keyword {key!r}" + (f" ({RENAMED_KEYWORDS[key]})" if key in RENAMED_KEYWORDS else "")
                    for key in unknown] + [f"needs {key!r}" for key in missing]
        raise RequestError(
            f"head {name!r} ({HEADS[name].__name__}) {'; '.join(problems)}; its keywords are "
            f"{', '.join(required)} (required) and {', '.join(optional)}"
        )
    return HEADS[name](**kwargs)


def upgrade_saved_head_config(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A head config saved by an earlier version, in today's keywords (a copy; today's configs unchanged).

    DPT configs saved before the one head vocabulary hold ``num_outputs`` (the class count, 1 for
    depth) and the depth range for both tasks (unused by segmentation): ``num_outputs`` becomes
    ``num_classes`` for segmentation and is dropped for depth, where it was 1; the unused depth
    range of a segmentation DPT is dropped. The rebuilt head has the same modules and weights.
    """
    config = dict(config)
    if name != "dpt" or "num_outputs" not in config:
        return config
    count = config.pop("num_outputs")
    if config.get("task", "segmentation") == "segmentation":
        config["num_classes"] = count
        for key in ("min_depth", "max_depth", "num_bins", "bin_spacing"):
            config.pop(key, None)
    return config


def head_name(head: nn.Module) -> str:
    """The name under which ``head``'s class is registered in :data:`HEADS`.

    Raises:
        RequestError: the class is not registered (it could not be rebuilt by name).
    """
    for name, cls in HEADS.items():
        if type(head) is cls:
            return name
    raise RequestError(
        f"head of type {type(head).__name__} is not registered in siglip2_dense.heads.HEADS "
        f"({', '.join(sorted(HEADS))}); register it to save and rebuild it by name"
    )
