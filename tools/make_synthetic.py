"""Write a synthetic data set in a real on-disk format (see siglip2_dense/data/write_formats.py).

The same command as ``siglip2-dense make-synthetic``; see :mod:`siglip2_dense.commands.make_synthetic` (or ``--help``).
"""

from __future__ import annotations

import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.commands.make_synthetic import build_parser, run

__all__ = ["build_parser", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
