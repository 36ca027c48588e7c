"""Segment images into any list of labels with a SigLIP / SigLIP2 checkpoint, training-free.

The same command as ``siglip2-dense segment``; see :mod:`siglip2_dense.commands.segment` (or ``--help``).
"""

from __future__ import annotations

import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.commands.segment import build_parser, run

__all__ = ["build_parser", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
