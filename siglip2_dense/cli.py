"""The ``siglip2-dense`` command, and how every command-line tool reports an error.

``siglip2-dense <command> [arguments]`` runs one of :data:`COMMANDS` (``siglip2-dense <command> --help``
for its options); ``python -m siglip2_dense.cli <command> ...`` is the same, and is what ``torchrun``
starts (``torchrun --nproc_per_node 8 -m siglip2_dense.cli segment photos/ --labels ...``). The
``tools/*.py`` scripts are the same commands under their older names. A command's module is imported
only when it runs, and its parser imports nothing heavy, so ``--help`` answers at once.

How an error is reported: one line, a known exit code, a traceback only on request.

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

``--debug`` prints the full traceback before the line. Unless ``--verbose`` is given, transformers' and
huggingface_hub's warnings and progress bars (weight loading, downloads) are silenced while the tool runs. An error raised inside a ``DataLoader`` worker
reaches the main process with the worker's traceback folded into its message; the line keeps only
the original message.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence

from siglip2_dense.errors import Siglip2DenseError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
DEBUG_FLAG = "--debug"
VERBOSE_FLAG = "--verbose"
PROGRAM = "siglip2-dense"

# command name -> the module holding its build_parser() and run(args); imported only when the command runs
COMMANDS = {
    "segment": "siglip2_dense.commands.segment",
    "train": "siglip2_dense.commands.train",
    "eval": "siglip2_dense.commands.evaluate",
    "eval-openvocab": "siglip2_dense.openvocab.benchmark_table",
    "features": "siglip2_dense.commands.features",
    "make-synthetic": "siglip2_dense.commands.make_synthetic",
    "train-demo": "siglip2_dense.commands.train_demo",
}
_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def add_debug_flag(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--debug`` switch (print the full traceback of an error), unless it has one."""
    if DEBUG_FLAG not in parser._option_string_actions:
        parser.add_argument(DEBUG_FLAG, action="store_true", help="print the full traceback of an error")


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` a ``--verbose`` switch (show third-party warnings and progress bars), unless it has one."""
    if VERBOSE_FLAG not in parser._option_string_actions:
        parser.add_argument(VERBOSE_FLAG, action="store_true",
                            help="show transformers' warnings and weight-loading progress bars")


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence transformers' warnings and its and huggingface_hub's progress bars inside the block; restore after.

    Imports ``transformers.utils.logging`` (not torch, not the models), so call it after argument parsing.
    """
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    bars = transformers_logging.is_progress_bar_enabled()
    hub_bars_disabled = are_progress_bars_disabled()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    disable_progress_bars()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)
        if bars:
            transformers_logging.enable_progress_bar()
        if not hub_bars_disabled:
            enable_progress_bars()


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
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    try:
        with contextlib.nullcontext() if getattr(args, "verbose", False) else quiet_libraries():
            code = main(args)
    except (Exception, KeyboardInterrupt) as error:
        return report_error(error, bool(getattr(args, "debug", False)))
    return EXIT_OK if code is None else int(code)


def command_summary(module_name: str) -> str:
    """The first line of a command module's docstring, read from its source (the module is not imported)."""
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.origin:
        return "(not installed in this version)"
    with open(spec.origin, encoding="utf-8") as source:
        docstring = ast.get_docstring(ast.parse(source.read())) or ""
    return docstring.strip().splitlines()[0] if docstring.strip() else ""


def usage() -> str:
    """The top-level help: how to call, and each command with its one-line summary."""
    width = max(len(name) for name in COMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {command_summary(module)}" for name, module in COMMANDS.items())
    return (f"usage: {PROGRAM} <command> [arguments]   ({PROGRAM} <command> --help for its options)\n\n"
            f"commands:\n{rows}\n\nUnder torchrun: torchrun --nproc_per_node N -m siglip2_dense.cli <command> ...\n")


def load_command(name: str):
    """The module of command ``name`` (see :data:`COMMANDS`).

    Raises:
        RequestError: ``name`` is no command, or its module is not part of this installation.
    """
    from siglip2_dense.errors import RequestError

    if name not in COMMANDS:
        raise RequestError(f"unknown command {name!r}; valid commands: {', '.join(COMMANDS)}")
    module_name = COMMANDS[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name is None or not module_name.startswith(error.name):
            raise
        raise RequestError(f"command {name!r} is not installed in this version of siglip2-dense "
                           f"(no module {module_name})") from error


def main(argv: Sequence[str] | None = None) -> int:
    """``siglip2-dense <command> [arguments]``: run one command; return its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return EXIT_OK if argv else EXIT_ERROR
    if argv[0] == "--version":
        from siglip2_dense import __version__

        print(f"{PROGRAM} {__version__}")
        return EXIT_OK
    try:
        module = load_command(argv[0])
    except Siglip2DenseError as error:
        print(f"error: {error_message(error)}", file=sys.stderr)
        return EXIT_ERROR
    parser = module.build_parser()
    parser.prog = f"{PROGRAM} {argv[0]}"
    return run_tool(module.run, parser, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
