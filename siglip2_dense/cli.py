"""How every command-line tool reports an error: one line, a known exit code, a traceback only on request.

Each tool builds its ``argparse`` parser and a ``main(args) -> int`` and hands both to :func:`run_tool`::

    def main(argv: list[str] | None = None) -> int:
        return run_tool(run, build_parser(), argv)

:func:`run_tool` adds ``--debug``, parses the arguments, runs ``main`` and turns what escapes it into
one line on stderr and an exit code:

- an error of the toolkit's vocabulary (:class:`~siglip2_dense.errors.Siglip2DenseError`: bad data,
  config, checkpoint or request, a missing file) or an ``OSError`` of the machine (a full disk, no
  permission) -> ``error: <message>``, exit code :data:`EXIT_ERROR` (2, as argparse's usage errors);
- Ctrl-C -> ``error: interrupted``, exit code :data:`EXIT_INTERRUPTED` (130, as a shell reports SIGINT);
- anything else is a bug in the toolkit -> ``error: internal error (<type>: <message>) ...``,
  exit code :data:`EXIT_INTERNAL` (1).

``--debug`` prints the full traceback before the line. An error raised inside a ``DataLoader`` worker
reaches the main process with the worker's traceback folded into its message; the line keeps only
the original message.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from siglip2_dense.errors import Siglip2DenseError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--debug`` switch (print the full traceback of an error), unless it has one."""
    if DEBUG_FLAG not in parser._option_string_actions:
        parser.add_argument(DEBUG_FLAG, action="store_true", help="print the full traceback of an error")


def error_message(error: BaseException) -> str:
    """The message of ``error`` on one line, with a DataLoader worker's traceback taken out."""
    text = str(error).strip()
    if _WORKER_TRACEBACK in text:
        text = _original_message(text, type(error)) + " (raised in a DataLoader worker)"
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = f"missing key {error.args[0]!r}"
    return " ".join(line.strip() for line in text.splitlines() if line.strip()) or type(error).__name__


def _original_message(text: str, error_type: type) -> str:
    """The last ``<Type>: <message>`` line of a worker traceback that torch folded into a message."""
    lines = text.splitlines()
    prefixes = (f"{error_type.__module__}.{error_type.__qualname__}: ", f"{error_type.__qualname__}: ")
    for index in range(len(lines) - 1, -1, -1):
        for prefix in prefixes:
            if lines[index].startswith(prefix):
                return "\n".join([lines[index][len(prefix):], *lines[index + 1:]])
    return lines[-1]


def report_error(error: BaseException, debug: bool) -> int:
    """Print ``error`` as :func:`run_tool` does (traceback first under ``debug``); return the exit code."""
    if debug:
        traceback.print_exception(error)
    if isinstance(error, KeyboardInterrupt):
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(error, (Siglip2DenseError, OSError)):
        print(f"error: {error_message(error)}", file=sys.stderr)
        return EXIT_ERROR
    hint = "" if debug else f"; rerun with {DEBUG_FLAG} for the traceback"
    print(f"error: internal error ({type(error).__name__}: {error_message(error)}), a bug in siglip2-dense"
          f"{hint} and report it", file=sys.stderr)
    return EXIT_INTERNAL


def run_tool(
    main: Callable[[argparse.Namespace], int | None],
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` with ``parser`` (plus ``--debug``), run ``main(args)``, and return its exit code.

    Returns:
        ``main``'s code (0 when it returns None), or the code of the error that escaped it (see the
        module docstring). Argument errors exit through argparse as usual (code 2).
    """
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    try:
        code = main(args)
    except (Exception, KeyboardInterrupt) as error:
        return report_error(error, bool(getattr(args, "debug", False)))
    return EXIT_OK if code is None else int(code)


# --- python -m siglip2_dense.cli <command> ... (the console entry point will take this over) ----------
COMMANDS = {"eval-openvocab": "siglip2_dense.openvocab.benchmark_table"}


def dispatch(argv: Sequence[str]) -> int:
    """Run ``<command> [args...]``: the command's module ``build_parser()`` / ``run(args)``, imported lazily."""
    import importlib

    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m siglip2_dense.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return EXIT_ERROR
    module = importlib.import_module(COMMANDS[argv[0]])
    return run_tool(module.run, module.build_parser(), list(argv[1:]))


if __name__ == "__main__":
    sys.exit(dispatch(sys.argv[1:]))
