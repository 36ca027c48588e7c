"""siglip2-dense: SigLIP2 vision encoders as backbones for dense prediction.

The public API is a handful of names, imported on first use so that ``import siglip2_dense``
stays cheap (worker processes and command-line tools start faster)::

    import siglip2_dense as sd
    bb = sd.load_backbone("google/siglip2-base-patch16-naflex")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "siglip2_dense.backbone.siglip",
    "load_backbone": "siglip2_dense.backbone.siglip",
    "DenseFeatures": "siglip2_dense.backbone.features",
    "tokens_to_grid": "siglip2_dense.backbone.features",
    "DenseModel": "siglip2_dense.model",
    "OpenVocabSegmenter": "siglip2_dense.openvocab.segmenter",
    "OpenVocabResult": "siglip2_dense.openvocab.result",
    "TextEncoder": "siglip2_dense.text.encoder",
}

__all__ = [
    "Backbone",
    "DenseFeatures",
    "DenseModel",
    "OpenVocabResult",
    "OpenVocabSegmenter",
    "TextEncoder",
    "load_backbone",
    "tokens_to_grid",
]

if TYPE_CHECKING:
    from siglip2_dense.backbone.features import DenseFeatures, tokens_to_grid
    from siglip2_dense.backbone.siglip import Backbone, load_backbone
    from siglip2_dense.model import DenseModel
    from siglip2_dense.openvocab.result import OpenVocabResult
    from siglip2_dense.openvocab.segmenter import OpenVocabSegmenter
    from siglip2_dense.text.encoder import TextEncoder


assert sorted(__all__) == sorted(_EXPORTS), "every export is listed once in __all__"


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'siglip2_dense' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
