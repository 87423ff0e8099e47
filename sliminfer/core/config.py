"""The pipeline's configuration: reading it from YAML presets, files, dicts and ``key=value`` overrides.

One validated object describes a whole run (model, pruning, cache, attention, prompt filter, generation,
decode), so a YAML file, a preset name, a dict from code and command-line overrides all pass through the
same checks and fail the same way: a :class:`~sliminfer.core.errors.ConfigError` naming the field path, the
value and what is allowed, before any weight is loaded.

The schema itself (the section models and :class:`SlimConfig`) is :mod:`sliminfer.core.sections`,
re-exported here. This module knows the schema only, not the registry (which imports it):
:func:`read_config` validates against the models, and :func:`sliminfer.load_config`
(:func:`sliminfer.core.pipeline.load_config`) adds the strategy checks on top.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from sliminfer.core.errors import ConfigError, UnknownNameError
from sliminfer.core.sections import (
    AttentionSection,
    CacheSection,
    ConfigModel,
    DecodeKernel,
    DecodeSection,
    GenerationSection,
    ModelSection,
    PromptFilterSection,
    PruningSection,
    SlimConfig,
    StrategySpec,
)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


S = TypeVar("S", bound=ConfigModel)


def updated_section(section: S, prefix: str, updates: Mapping[str, Any]) -> S:
    """``section`` with the ``updates`` that are not None, under the same checks as YAML values (a
    ConfigError naming ``prefix.field``): per-call options of ``generate`` and the decode."""
    try:
        return type(section).model_validate(
            {**section.model_dump(), **{k: v for k, v in updates.items() if v is not None}}
        )
    except ValidationError as exc:
        raise config_error_from_validation(exc, prefix=prefix, model=type(section)) from None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise UnknownNameError("preset", name, preset_names())
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping, where plain YAML loaders let
    the last one win silently (an edited preset with two ``budgets:`` lines runs only one of them)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (each key may appear once in a mapping)", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse command-line ``a.b=value`` items; values are YAML scalars or flow collections."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("override", item, "write overrides as dotted.key=value, e.g. model.dtype=float32")
        key = key.strip()
        if key in out:
            raise ConfigError("override", item, f"{key} is set twice on the command line; give it once")
        try:
            out[key] = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(key, raw, f"is not a valid (safe) YAML value: {exc}") from None
    return out


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.replace("__", ".").split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), child, "is not a section; cannot set a key inside it")
        node = child
    node[parts[-1]] = value


def _read_source(source: str | Path | Mapping[str, Any] | SlimConfig | None) -> dict[str, Any]:
    if source is None:
        return {}
    if isinstance(source, SlimConfig):
        return source.model_dump()
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    path = Path(source)
    if not path.exists() and (str(source) in preset_names() or not path.suffix):
        path = preset_path(str(source))
    if not path.is_file():
        raise ConfigError("config", str(source), f"is neither a file nor a preset ({', '.join(preset_names())})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("config", str(path), f"is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          "save the YAML file as UTF-8") from None
    except OSError as exc:
        raise ConfigError("config", str(path), f"cannot be read: {exc.strerror or exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError("config", str(path), f"is not valid (safe) YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", str(source),
                          "must be a YAML mapping with sections (model, pruning, cache, attention, prompt_filter, generation, decode)")
    return data


def _allowed_keys(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """The field names of the model at ``loc`` (for 'unknown key' messages)."""
    model: Any = root
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
        for arg in getattr(model, "__args__", ()):  # unwrap Optional[...]
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                model = arg
    return sorted(getattr(model, "model_fields", {}))


def config_error_from_validation(
    exc: ValidationError, prefix: str = "", model: type[BaseModel] | None = None
) -> ConfigError:
    """Turn pydantic's first error into a ConfigError that names field, value and rule."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    field = ".".join(str(p) for p in ((prefix,) if prefix else ()) + loc) or prefix or "config"
    if err["type"] == "extra_forbidden":
        root = model if model is not None else (None if prefix else SlimConfig)
        allowed = _allowed_keys(loc, root) if root is not None else []
        rule = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
    elif isinstance(err.get("input"), bool) and err["type"] in ("int_type", "float_type"):
        rule = f"must be a number, not a boolean ({err['msg']})"
    else:
        rule = err["msg"].removeprefix("Value error, ")
    return ConfigError(field, err.get("input"), rule)


def read_config(
    source: str | Path | Mapping[str, Any] | SlimConfig | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> SlimConfig:
    """Read a config from a preset name, a YAML path, a dict or a config, apply overrides, validate it
    against the schema.

    Strategy sections are only checked to name something; whether that names a registered strategy and
    whether its options are valid is for :func:`sliminfer.core.pipeline.load_config`, which calls this
    and is what users call (as ``sliminfer.load_config``).
    """
    data = _read_source(source)
    if overrides:
        items = parse_overrides(overrides) if not isinstance(overrides, Mapping) else overrides
        for key, value in items.items():
            _apply_override(data, key, value)
    try:
        config = SlimConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error_from_validation(exc) from None
    return config


__all__ = [
    "AttentionSection",
    "CacheSection",
    "ConfigModel",
    "DecodeKernel",
    "DecodeSection",
    "GenerationSection",
    "ModelSection",
    "PromptFilterSection",
    "PruningSection",
    "SlimConfig",
    "StrategySpec",
    "config_error_from_validation",
    "parse_overrides",
    "preset_names",
    "read_config",
    "updated_section",
]
