"""``sliminfer plugins``: every registered strategy and adapter, where it came from, its config fields."""

from __future__ import annotations

import argparse

from sliminfer.core.registry import KINDS, get_registry


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("plugins", help="list registered scorers, schedules, cache managers and adapters")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    registry = get_registry()
    for kind in KINDS:
        print(f"{kind}s:")
        for name, entry in sorted(registry.entries[kind].items()):
            print(f"  {name:<14} {entry.summary}  [from {entry.plugin}]")
            model = entry.config_model if kind != "adapter" else None
            for field, info in (model.model_fields.items() if model else ()):
                default = "required" if info.is_required() else f"default {info.default!r}"
                print(f"      {field}: {info.description or ''} ({default})")
    if registry.blocked:
        print(f"blocked by SLIMINFER_BLOCK_PLUGINS: {', '.join(registry.blocked)}")
    return 0
