"""Evaluate a trained dense model (or a SigLIP checkpoint zero-shot) on an experiment's validation split.

The same command as ``siglip2-dense eval``; see :mod:`siglip2_dense.commands.evaluate` (or ``--help``).
"""

from __future__ import annotations

import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.commands.evaluate import build_parser, run

__all__ = ["build_parser", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
