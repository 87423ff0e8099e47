"""The ``sliminfer`` command: one module per subcommand, each with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from sliminfer import __version__
from sliminfer.core.errors import SlimInferError

COMMANDS = ("demo", "run", "plugins", "config", "bench", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sliminfer", description="Fast long-context inference by pruning prompt tokens mid-model (SlimInfer)."
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the versions of sliminfer, torch and transformers, and exit")
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


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    print(f"sliminfer: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; sliminfer's own errors and Ctrl-C end it with one line on stderr, no traceback."""
    args = parse_args(build_parser(), argv)
    show_warning = warnings.showwarning
    warnings.showwarning = _one_line_warning
    try:
        return int(args.func(args) or 0)
    except SlimInferError as exc:
        print(f"sliminfer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sliminfer {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = show_warning


if __name__ == "__main__":
    sys.exit(main())
