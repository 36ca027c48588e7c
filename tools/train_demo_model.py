"""Train the demo SigLIP2 checkpoint on the synthetic world, measure it, and record how.

The same command as ``siglip2-dense train-demo``; see :mod:`siglip2_dense.commands.train_demo` (or ``--help``).
"""

from __future__ import annotations

import sys

from siglip2_dense.cli import run_tool
from siglip2_dense.commands.train_demo import build_parser, run

__all__ = ["build_parser", "main", "run"]


def main(argv: list[str] | None = None) -> int:
    return run_tool(run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
