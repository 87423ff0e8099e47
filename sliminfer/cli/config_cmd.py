"""``sliminfer config validate|show``: check a config, or print it with every section's defaults filled in (a
strategy's own options as written; ``sliminfer plugins`` lists their defaults)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sliminfer.core.config import SlimConfig, preset_names
from sliminfer.core.errors import ConfigError
from sliminfer.core.hub_source import is_hub_id
from sliminfer.core.loading import read_model_config, resolve_source
from sliminfer.core.pipeline import load_config
from sliminfer.core.preflight import check_config_fits_checkpoint, check_config_fits_machine
from sliminfer.core.registry import get_registry


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
    check_config_fits_machine(config)
    checked = _check_against_checkpoint(config)
    if args.action == "show":
        print(config.to_yaml(), end="")
    else:
        print(f"{args.config}: OK ({checked})")
    return 0


def _check_against_checkpoint(config: SlimConfig) -> str:
    """Check the config against the checkpoint's config.json (layer indices, architecture, the adapter's
    refusals) when that needs no download; say which checks ran."""
    from sliminfer.assets.default_model import default_model_fetched, is_default_model_name

    if is_default_model_name(config.model.source) and not default_model_fetched():
        return "model checks skipped: the default model is fetched on first use; run `sliminfer demo` once"
    source = config.model.source
    if not is_default_model_name(source) and not Path(source).expanduser().exists():
        if not is_hub_id(source):
            return f"model checks skipped: model.source {source!r} does not exist on this machine"
        try:  # a Hub model is checked if it is in the Hugging Face cache: validating downloads nothing
            resolve_source(source, download=False)
        except ConfigError as exc:
            return f"model checks skipped: {exc}"
    _, hf_config = read_model_config(config.model, download=False)
    check_config_fits_checkpoint(config, get_registry(), hf_config)
    return f"checked against {config.model.source} ({hf_config.model_type}, {hf_config.num_hidden_layers} layers)"
