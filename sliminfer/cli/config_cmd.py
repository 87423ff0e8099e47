"""``sliminfer config validate|show``: check a config, or print it with every default filled in."""

from __future__ import annotations

import argparse

from sliminfer.core.config import load_config, preset_names


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("config", help="validate or show a config (YAML path or preset name)")
    actions = parser.add_subparsers(dest="action", required=True)
    for action, text in (("validate", "check a config and report the first problem"),
                         ("show", "print the resolved config as YAML, defaults included")):
        p = actions.add_parser(action, help=text)
        p.add_argument("config", help=f"YAML path or preset ({', '.join(preset_names())})")
        p.add_argument("overrides", nargs="*", help="dotted.key=value overrides")
        p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    if args.action == "show":
        print(config.to_yaml(), end="")
    else:
        print(f"{args.config}: OK")
    return 0
