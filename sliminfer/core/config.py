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
import os
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
from sliminfer.core.yaml_reading import ConfigLoader, yaml_problem

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


def _dotted(key: str) -> str:
    """``section__field`` (keyword arguments cannot hold dots) is ``section.field``."""
    return key.replace("__", ".")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``a.b=value`` items (``a__b=value`` is the same key); values are YAML scalars or flow collections.

    ``items`` must be a list (any iterable) of strings: a single string is refused rather than split into its
    characters, and a key given twice is refused rather than letting the last one win."""
    if isinstance(items, str | bytes):
        raise ConfigError("overrides", items,
                          f"is a single string; give a list of 'key=value' strings, e.g. [{items!r}]")
    if not isinstance(items, Iterable):
        raise ConfigError("overrides", items, f"must be a mapping of dotted keys to values or a list of 'key=value' "
                          f"strings, not {type(items).__name__}")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str):
            raise ConfigError("overrides", item, f"each item must be a 'key=value' string, not {type(item).__name__} "
                              "(or give a mapping of dotted keys to values)")
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("override", item, "write overrides as dotted.key=value, e.g. model.dtype=float32")
        key = _dotted(key.strip())
        if key in out:
            raise ConfigError("override", item, f"{key} is set twice in the overrides (a__b is a.b); give it once")
        try:
            out[key] = yaml.load(raw, Loader=ConfigLoader) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(key, raw, f"is not a valid (safe) YAML value: {yaml_problem(exc)}") from None
    return out


def _mapping_overrides(overrides: Mapping[Any, Any]) -> dict[str, Any]:
    """Overrides given as a mapping (``from_config(**{"model.dtype": ...})``, ``section__field=`` keywords):
    keys must be strings, and ``a__b`` and ``a.b`` are one key, refused if both are given."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise ConfigError("overrides", key, f"keys must be dotted strings such as 'generation.seed', not "
                              f"{type(key).__name__} (overrides: a mapping of dotted keys to values or a list of "
                              "'key=value' strings)")
        dotted = _dotted(key)
        if dotted in out:
            raise ConfigError("overrides", key, f"{dotted} is set twice in the overrides (a__b is a.b); give it once")
        out[dotted] = value
    return out


def _merged(old: Any, new: Any) -> Any:
    """``new`` set where ``old`` was (overrides): a mapping merges into a mapping key by key, recursively, so
    ``generation={seed: 1}`` keeps the preset's other generation fields; a mapping whose ``name`` differs from
    the old one (another strategy: ``cache={name: offload}``) replaces it whole, taking none of the old
    strategy's options; anything else (null, a string, a list) replaces the old value."""
    if not (isinstance(old, Mapping) and isinstance(new, Mapping)):
        return copy.deepcopy(new)
    if "name" in new and "name" in old and new["name"] != old["name"]:
        return copy.deepcopy(dict(new))
    out = _flat_options(old)
    for key, value in _flat_options(new).items():
        out[key] = _merged(out[key], value) if key in out else copy.deepcopy(value)
    return out


def _flat_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A strategy written ``{name: x, options: {...}}`` as ``{name: x, ...}`` (both forms are valid), so its
    options merge one by one; left as it is where that would hide a key given in both places."""
    out = dict(spec)
    options = out.get("options")
    if isinstance(options, Mapping) and not set(options) & set(out):
        del out["options"]
        out.update(options)
    return out


def _apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, Mapping) and not isinstance(child, dict):
            child = node[part] = dict(child)
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), child, "is not a section; cannot set a key inside it")
        node = child
    last = parts[-1]
    node[last] = _merged(node[last], value) if last in node else copy.deepcopy(value)


def _read_source(source: str | Path | Mapping[str, Any] | SlimConfig | None) -> dict[str, Any]:
    if source is None:
        return {}
    if isinstance(source, SlimConfig):
        return source.model_dump()
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source))
    if not isinstance(source, str | os.PathLike):
        raise ConfigError("source", source, "the config source must be a preset name, a YAML path, a mapping, "
                          f"a SlimConfig or None, not {type(source).__name__}")
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
        data = yaml.load(text, Loader=ConfigLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError("config", str(path), f"is not valid (safe) YAML: {yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("config", str(source),
                          "must be a YAML mapping with sections (model, pruning, cache, attention, prompt_filter, "
                          "generation, decode)")
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

    ``overrides`` is a mapping of dotted keys to values (``{"generation.seed": 1}``; ``generation__seed`` is the
    same key) or a list of ``key=value`` strings whose values are YAML; a key given twice is refused. An
    override whose value is a mapping merges into the section already there, key by key (recursively):
    ``generation={seed: 1}`` on a preset keeps the preset's ``max_new_tokens``. A strategy mapping that names
    another strategy (``cache={name: offload}`` over ``cache: {name: gpu, ...}``) replaces the old one whole,
    keeping none of its options; any other value replaces what was there (``pruning=null``: no pruning).

    Strategy sections are only checked to name something; whether that names a registered strategy and
    whether its options are valid is for :func:`sliminfer.core.pipeline.load_config`, which calls this
    and is what users call (as ``sliminfer.load_config``).
    """
    data = _read_source(source)
    if overrides is not None:
        items = _mapping_overrides(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
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
