"""Train a dense head (and optionally the backbone) from an experiment config.

The same command as ``siglip2-dense train``; see :mod:`siglip2_dense.commands.train` (or ``--help``).
"""

from __future__ import annotations

import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.commands.train import build_parser, run

__all__ = ["build_parser", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
