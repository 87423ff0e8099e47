"""The ``sliminfer`` command: one module per subcommand, each with a ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sliminfer.core.errors import SlimInferError

COMMANDS = ("demo", "run", "plugins", "config", "bench", "eval")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sliminfer", description="Fast long-context inference by pruning prompt tokens mid-model (SlimInfer)."
    )
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SlimInferError as exc:
        print(f"sliminfer {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
