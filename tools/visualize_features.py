"""Show what a backbone sees: the first three principal components of an image's patch features as RGB.

The same command as ``siglip2-dense features``; see :mod:`siglip2_dense.commands.features` (or ``--help``).
"""

from __future__ import annotations

import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.commands.features import build_parser, run

__all__ = ["build_parser", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
