"""The strategy registry, on pluggy.

Built-in strategies and third-party plugins register through the same hook,
``sliminfer_register(register)``, and receive a typed :class:`Register` callback, so no plugin touches
the registry's internals (the hook specs and the callback are :mod:`sliminfer.core.hooks`, re-exported
here). Kinds: scorer, schedule, cache (KV cache manager), attention (prefill attention), prompt_filter
(a first pass that chooses the prompt tokens the prefill runs on) and adapter.
Third-party plugins load from the ``sliminfer`` entry-point group; the
environment variable ``SLIMINFER_BLOCK_PLUGINS`` (comma-separated entry-point names, or ``*`` for
all) keeps named plugins from loading at all.

Entry points are loaded one at a time, and only those declared in that group, so a plugin that fails
(at import, in ``sliminfer_register``, or by defining no sliminfer hook at all, which means its entry
point names the wrong module) is known by name: it becomes a :class:`PluginError` that names the
entry point, its target and distribution, the original exception, and the ``SLIMINFER_BLOCK_PLUGINS``
value that skips it. :func:`get_registry` raises it; ``sliminfer plugins`` lists it beside what loaded.
The built-in strategies cannot be blocked, and a blocked name that matches no installed entry point
(a typo, most likely) is warned about.

The registry knows the base class of each kind (it imports them: they derive from the leaf
:class:`~sliminfer.core.strategy.Strategy` and import nothing of this module) but no concrete strategy:
the built-ins are handed to it by the package (``sliminfer/__init__.py`` calls :func:`provide_builtins`,
which any import of a sliminfer module runs first), so importing this module imports no strategy, and
the built-ins load when the first registry is built.

Observer hooks (prefill start/end, each pruning decision, each decode step) are plain pluggy hooks.
The pipeline resolves strategies once per run and checks once whether any observer is registered,
so pluggy stays out of the per-token loop.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, ValidationError

from sliminfer.cache.base import KVCacheManager
from sliminfer.core.config import SlimConfig, StrategySpec, config_error_from_validation
from sliminfer.core.errors import (
    ConfigError,
    SlimInferError,
    UnknownNameError,
    UnsupportedModelError,
)
from sliminfer.core.hooks import HOOKS, PROJECT, Hookspecs, Register, hookimpl
from sliminfer.core.strategy import Strategy
from sliminfer.models.base import ModelAdapter
from sliminfer.strategies.attention import AttentionStrategy
from sliminfer.strategies.base import Schedule, Scorer
from sliminfer.strategies.block_selection import check_budget_fits_window
from sliminfer.strategies.prompt_filter import PromptFilter

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ENTRY_POINT_GROUP = "sliminfer"
BLOCK_ENV = "SLIMINFER_BLOCK_PLUGINS"
KINDS = ("scorer", "schedule", "cache", "attention", "prompt_filter", "adapter")
BUILTINS = "sliminfer.builtins"  # the built-ins' plugin name (the module sliminfer/__init__.py provides)
BUILTIN_NAMES = frozenset({BUILTINS, "builtins"})  # what a user may write to mean the built-ins

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    """One registered strategy or adapter."""

    kind: str
    name: str
    cls: type
    plugin: str

    @property
    def config_model(self) -> type[BaseModel] | None:
        return getattr(self.cls, "Config", None)

    @property
    def summary(self) -> str:
        doc = (self.cls.__doc__ or "").strip().splitlines()
        return doc[0] if doc else ""


class PluginError(SlimInferError):
    """An entry-point plugin that failed to load: which one, why, and the variable value that skips it.

    The original exception, if any, is kept as ``__cause__`` (as ``raise ... from exc`` would), so a
    traceback still shows where inside the plugin it failed.
    """

    def __init__(self, entry_point: EntryPoint, problem: str, blocked: Sequence[str] = ()) -> None:
        self.name, self.target, self.problem = entry_point.name, entry_point.value, problem
        self.distribution = entry_point.dist.name if entry_point.dist else None
        source = f"distribution {self.distribution!r}" if self.distribution else "no known distribution"
        skip = ",".join([*blocked, self.name])  # keep what is blocked already
        super().__init__(
            f"plugin {self.name!r} (entry point {self.target!r} of {source}) failed to load: {problem}; "
            f"set {BLOCK_ENV}={skip} to skip it"
        )

    @classmethod
    def caused_by(cls, entry_point: EntryPoint, exc: Exception, blocked: Sequence[str] = ()) -> PluginError:
        """The error for ``exc`` raised while loading ``entry_point``, on one line and chained to it."""
        message = " ".join(str(exc).split())  # pluggy's validation errors span several lines
        error = cls(entry_point, f"{type(exc).__name__}: {message}" if message else type(exc).__name__, blocked)
        error.__cause__ = exc
        return error


def plugin_entry_points() -> list[EntryPoint]:
    """The declared entry points of the ``sliminfer`` group: the only third-party code the registry imports."""
    return list(entry_points(group=ENTRY_POINT_GROUP))


#: the class each kind's registered classes must subclass (each derives from :class:`Strategy`)
BASES: dict[str, type[Strategy]] = {
    "scorer": Scorer,
    "schedule": Schedule,
    "cache": KVCacheManager,
    "attention": AttentionStrategy,
    "prompt_filter": PromptFilter,
    "adapter": ModelAdapter,
}

_builtins_loader: Callable[[], object] | None = None


def provide_builtins(load: Callable[[], object]) -> None:
    """Say how to get the built-in plugin (an object with ``sliminfer_register``); ``load`` is called each
    time a registry is built without ``builtins=``. ``sliminfer/__init__.py`` passes one that imports
    :mod:`sliminfer.builtins`, so this module never imports a concrete strategy itself."""
    global _builtins_loader
    _builtins_loader = load


def default_builtins() -> object:
    """The built-in plugin :func:`provide_builtins` gave."""
    if _builtins_loader is None:  # only if sliminfer/__init__.py did not run, which importing this module runs
        raise SlimInferError("no built-in strategies were provided (sliminfer.core.registry.provide_builtins)")
    return _builtins_loader()


class Registry:
    """Everything registered, looked up by kind and name."""

    def __init__(
        self, load_entry_points: bool = True, allow_broken: bool = False, builtins: object | None = None
    ) -> None:
        """Register the built-ins, then each entry-point plugin not blocked by ``SLIMINFER_BLOCK_PLUGINS``.

        ``builtins`` is the built-in plugin, registered under the name ``sliminfer.builtins``; by default
        the one :func:`provide_builtins` gave (:mod:`sliminfer.builtins`). A plugin that fails to load is
        kept in ``broken`` and registers nothing; unless ``allow_broken`` (for ``sliminfer plugins``,
        which lists it), the first one is raised once all were tried.
        """
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(Hookspecs)
        self.entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self.blocked = sorted(n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip())
        self.broken: list[PluginError] = []
        self.register_plugin(default_builtins() if builtins is None else builtins, name=BUILTINS)
        if load_entry_points:
            self._load_entry_points(plugin_entry_points())
        if not allow_broken:
            self.raise_if_broken()

    def _load_entry_points(self, declared: list[EntryPoint]) -> None:
        """Load each declared plugin on its own, so a broken one is named and the others still load."""
        self._check_blocked(sorted(entry_point.name for entry_point in declared))
        if "*" in self.blocked:
            log.info("no entry-point plugin loaded: %s=*", BLOCK_ENV)
            return
        for entry_point in declared:
            if entry_point.name in self.blocked:
                log.info("plugin %r (%s) not loaded: blocked by %s", entry_point.name, entry_point.value, BLOCK_ENV)
                continue
            error = self._load_entry_point(entry_point)
            if error is not None:
                self.broken.append(error)

    def _check_blocked(self, installed: list[str]) -> None:
        """Refuse blocking the built-ins (it only surfaced later as "Available: (none)"); warn on a typo."""
        if BUILTIN_NAMES.intersection(self.blocked):
            blockable = ", ".join(installed) or "none: no entry-point plugin is installed"
            raise ConfigError(
                BLOCK_ENV, os.environ[BLOCK_ENV],
                f"the built-in strategies ({BUILTINS!r}) cannot be blocked; blockable entry-point plugins: "
                f"{blockable} (or '*' for all of them)",
            )
        for name in sorted(set(self.blocked) - set(installed) - {"*"}):
            warnings.warn(f"{UnknownNameError('plugin', name, installed, BLOCK_ENV)}; blocking it does nothing")

    def _load_entry_point(self, entry_point: EntryPoint) -> PluginError | None:
        """Import and register one plugin; whatever goes wrong comes back as the PluginError naming it."""
        try:
            plugin = entry_point.load()
            if not any(hasattr(plugin, hook) for hook in HOOKS):
                return PluginError(
                    entry_point,
                    f"{entry_point.value!r} defines none of the sliminfer hooks ({', '.join(HOOKS)}); point "
                    "the entry point at the module that does",
                    self.blocked,
                )
            self.register_plugin(plugin, name=entry_point.name)
        except Exception as exc:  # anything a plugin's import or registration raises
            # the error the user sees is one line; -vv shows where inside the plugin it failed
            log.debug("plugin %r (%s) failed to load", entry_point.name, entry_point.value, exc_info=True)
            return PluginError.caused_by(entry_point, exc, self.blocked)
        log.info("loaded plugin %r (%s)", entry_point.name, entry_point.value)
        return None

    def raise_if_broken(self) -> None:
        """Raise the first plugin that failed to load, so nothing runs without a plugin it may need."""
        if self.broken:
            raise self.broken[0].with_traceback(None)  # a fresh traceback each time it is raised

    def _register_plugin(self, plugin: object) -> None:
        source = self.pm.get_name(plugin) or repr(plugin)
        impl = getattr(plugin, "sliminfer_register", None)
        if impl is None:
            return

        def add(kind: str, name: str, cls: type) -> None:
            base = BASES[kind]
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise SlimInferError(f"plugin {source!r} registered {kind} {name!r} as {cls!r}, not a {base.__name__}")
            if kind != "adapter" and not isinstance(getattr(cls, "Config", None), type):
                raise SlimInferError(f"plugin {source!r}: {kind} {name!r} has no pydantic Config class")
            old = self.entries[kind].get(name)
            if old is not None and old.cls is not cls:
                raise SlimInferError(f"{kind} {name!r} registered twice: by {old.plugin!r} and by {source!r}")
            self.entries[kind][name] = Entry(kind, name, cls, source)

        impl(register=Register(add))

    def register_plugin(self, plugin: object, name: str | None = None) -> None:
        """Register an in-process plugin object (tests, notebooks) exactly as an entry point would be."""
        self.pm.register(plugin, name=name)
        before = {kind: dict(entries) for kind, entries in self.entries.items()}
        try:
            self._register_plugin(plugin)
        except Exception:
            self.pm.unregister(plugin)
            self.entries = before
            raise

    # lookups -------------------------------------------------------------------------------
    def get(self, kind: str, name: str, field: str | None = None) -> Entry:
        try:
            return self.entries[kind][name]
        except KeyError:
            raise UnknownNameError(kind, name, self.entries[kind], field) from None

    def options(self, kind: str, spec: StrategySpec, field: str) -> BaseModel:
        """Validate a strategy section's options with the strategy's own config model."""
        entry = self.get(kind, spec.name, f"{field}.name")
        try:
            return entry.cls.Config.model_validate(spec.options, strict=True)  # a plugin's too: no coercion
        except ValidationError as exc:
            raise config_error_from_validation(exc, prefix=field, model=entry.cls.Config) from None

    def build(self, kind: str, spec: StrategySpec, field: str) -> Any:
        """Instantiate the strategy a config section names."""
        return self.get(kind, spec.name, f"{field}.name").cls(self.options(kind, spec, field))

    def check_config(self, config: SlimConfig) -> None:
        """Everything that can be checked without the model: names, options, cross-field rules."""
        self.options("cache", config.cache, "cache")
        if config.pruning is not None:
            scorer = self.build("scorer", config.pruning.scorer, "pruning.scorer")
            schedule = self.build("schedule", config.pruning.schedule, "pruning.schedule")
            schedule.check_block_size(scorer.block_size, field="pruning.schedule")
            check_budget_fits_window(scorer.block_size, scorer.window, schedule.smallest_budget, field="pruning")
        if config.attention is not None:
            self.options("attention", config.attention, "attention")
        if config.prompt_filter is not None:
            self.options("prompt_filter", config.prompt_filter, "prompt_filter")

    def adapter_for(self, hf_config: PretrainedConfig) -> Entry:
        model_type = getattr(hf_config, "model_type", None)
        if model_type not in self.entries["adapter"]:
            archs = getattr(hf_config, "architectures", None) or [model_type]
            raise UnsupportedModelError(
                f"unsupported architecture {archs} (model_type {model_type!r}); supported model types: "
                f"{', '.join(sorted(self.entries['adapter']))}"
            )
        return self.entries["adapter"][model_type]

    def has_observers(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())


_REGISTRY: Registry | None = None


def get_registry(allow_broken: bool = False) -> Registry:
    """The process-wide registry, built on first use (importing sliminfer loads no plugin).

    It raises the :class:`PluginError` of a plugin that failed to load on every call, unless
    ``allow_broken`` (``sliminfer plugins`` lists what loaded and what did not).
    """
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry(allow_broken=True)
    if not allow_broken:
        _REGISTRY.raise_if_broken()
    return _REGISTRY


def reset_registry() -> None:
    """Forget the registry so the next lookup rebuilds it (after changing SLIMINFER_BLOCK_PLUGINS)."""
    global _REGISTRY
    _REGISTRY = None


__all__ = [
    "BASES",
    "ConfigError",
    "Entry",
    "PluginError",
    "Register",
    "Registry",
    "get_registry",
    "hookimpl",
    "plugin_entry_points",
    "provide_builtins",
    "reset_registry",
]
