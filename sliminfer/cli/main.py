"""The ``sliminfer`` command: one module per subcommand, each with a ``register(subparsers)``.

Results go to stdout; diagnostics (the package's log records and Python warnings) go to stderr as
``sliminfer: LEVEL: message`` lines, at the level ``-v``/``-q`` choose. The library itself configures no
logging: the command is the application that decides where records go.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sliminfer import __version__
from sliminfer.core.errors import SlimInferError

COMMANDS = ("demo", "run", "plugins", "config", "bench", "eval", "compare")

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sliminfer", description="Fast long-context inference by pruning prompt tokens mid-model (SlimInfer)."
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of sliminfer, torch and transformers, and exit")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="count", default=0,
                          help="show what sliminfer does on stderr: -v progress and decisions (INFO), -vv details (DEBUG)")
    loudness.add_argument("-q", "--quiet", action="store_true", help="show only errors on stderr (no warnings)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"sliminfer.cli.{name}_cmd")
        except ModuleNotFoundError as exc:  # an optional command whose module is not there
            if exc.name != f"sliminfer.cli.{name}_cmd":
                raise
            continue
        module.register(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv``, taking ``key=value`` overrides wherever they stand (also after the flags, as in
    ``run origin --prompt hi generation.max_new_tokens=2``) for commands that accept overrides."""
    args, extras = parser.parse_known_args(argv)
    overrides = [item for item in extras if "=" in item and not item.startswith("-")]
    unknown = [item for item in extras if item not in overrides]
    if overrides and not hasattr(args, "overrides"):
        unknown = extras
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


class _VersionAction(argparse.Action):
    """``--version``: sliminfer's version, then the torch and transformers it runs with (what a bug report
    needs). An action rather than a version string so transformers is imported only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        import torch
        import transformers

        print(f"sliminfer {__version__}\ntorch {torch.__version__}, transformers {transformers.__version__}")
        parser.exit()  # stdout and exit 0, as argparse's own version action


class _CliFormatter(logging.Formatter):
    """``sliminfer: warning: message``, the form the command's other stderr lines have."""

    def format(self, record: logging.LogRecord) -> str:
        return f"sliminfer: {record.levelname.lower()}: {super().format(record)}"


def log_level(verbose: int, quiet: bool) -> int:
    """The ``sliminfer`` logger's level for the flags: WARNING by default, INFO, DEBUG, or ERROR (``-q``)."""
    if quiet:
        return logging.ERROR
    return max(logging.DEBUG, logging.WARNING - 10 * verbose)


@contextmanager
def cli_logging(level: int) -> Iterator[None]:
    """Send the ``sliminfer`` logger's records from ``level`` up, and Python warnings, to stderr as one line
    each, for one command; afterwards the logger and ``warnings.showwarning`` are as they were (``main`` may
    run many times in one process, as in the tests)."""
    logger = logging.getLogger("sliminfer")
    handler = logging.StreamHandler()  # the current sys.stderr
    handler.setFormatter(_CliFormatter())
    old_level, show_warning = logger.level, warnings.showwarning
    logger.addHandler(handler)
    logger.setLevel(level)
    warnings.showwarning = _warning_as_record
    try:
        yield
    finally:
        warnings.showwarning = show_warning
        logger.setLevel(old_level)
        logger.removeHandler(handler)


def _warning_as_record(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    """A Python warning as one warning line of the command, through its logger (so ``-q`` hides it too)."""
    log.warning("%s", message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; sliminfer's own errors and Ctrl-C end it with one line on stderr, no traceback."""
    args = parse_args(build_parser(), argv)
    try:
        with cli_logging(log_level(args.verbose, args.quiet)):
            return int(args.func(args) or 0)
    except SlimInferError as exc:
        print(f"sliminfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sliminfer {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
