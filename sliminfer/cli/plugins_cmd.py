"""``sliminfer plugins``: every registered strategy and adapter, where it came from, its config fields.

It also lists the entry-point plugins that failed to load, each with its error and the
``SLIMINFER_BLOCK_PLUGINS`` value that skips it, and then exits 1: this is the one command that still
works with a broken plugin installed, so it is where one is diagnosed.
"""

from __future__ import annotations

import argparse

from sliminfer.core.registry import BLOCK_ENV, KINDS, Registry, get_registry


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plugins", help="list registered scorers, schedules, cache managers, attention strategies, "
                                            "prompt filters and adapters")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    registry = get_registry(allow_broken=True)
    _print_entries(registry)
    if registry.blocked:
        print(f"blocked by {BLOCK_ENV}: {', '.join(registry.blocked)}")
    _print_broken(registry)
    return 1 if registry.broken else 0


def _print_entries(registry: Registry) -> None:
    """Each kind's entries, with the plugin that registered them and their config fields."""
    for kind in KINDS:
        print(f"{kind}s:")
        for name, entry in sorted(registry.entries[kind].items()):
            print(f"  {name:<14} {entry.summary}  [from {entry.plugin}]")
            model = entry.config_model if kind != "adapter" else None
            for field, info in (model.model_fields.items() if model else ()):
                default = "required" if info.is_required() else f"default {info.default!r}"
                print(f"      {field}: {info.description or ''} ({default})")


def _print_broken(registry: Registry) -> None:
    """The plugins that failed to load: their errors name them and the variable value that skips them."""
    if registry.broken:
        print("broken plugins (nothing from them is registered):")
        for error in registry.broken:
            print(f"  {error}")
