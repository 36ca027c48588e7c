"""Dense prediction heads: each takes :class:`~siglip2_dense.backbone.features.DenseFeatures` and returns
outputs on the padded patch grid, with padded cells zero and without influence on real ones.

``HEADS`` maps a head's name to its class; :func:`build_head` builds one by name. Every head is
built from the backbone's declared channels (``in_channels=backbone.out_channels``) and records
its constructor arguments in ``head.config``, so ``DenseModel`` can save and rebuild it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from siglip2_dense.errors import RequestError

from .depth import BinsDepthHead
from .dpt import DPTHead
from .linear import LinearHead

HEADS: dict[str, type[nn.Module]] = {"linear": LinearHead, "bins": BinsDepthHead, "dpt": DPTHead}

__all__ = ["HEADS", "BinsDepthHead", "DPTHead", "LinearHead", "build_head", "head_name"]


def build_head(name: str, **kwargs: Any) -> nn.Module:
    """Build the head registered as ``name`` in :data:`HEADS` with ``kwargs`` (its constructor arguments).

    Raises:
        RequestError: ``name`` is not a registered head; the message lists the valid names.
    """
    if name not in HEADS:
        raise RequestError(f"unknown head {name!r}; expected one of {', '.join(sorted(HEADS))}")
    return HEADS[name](**kwargs)


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
