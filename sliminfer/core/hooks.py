"""What a plugin implements: the pluggy markers, the :class:`Register` callback and the hook specs.

A plugin module decorates its hooks with :data:`hookimpl` (``sliminfer.hookimpl``): ``sliminfer_register``
receives a :class:`Register`, one typed method per kind, so no plugin touches the registry's internals;
the observer hooks receive the events of :mod:`sliminfer.core.events`. Loading plugins and looking
strategies up is :mod:`sliminfer.core.registry`, which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from sliminfer.core import events

PROJECT = "sliminfer"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register:
    """The callback handed to ``sliminfer_register``: one method per kind of thing to register."""

    def __init__(self, add: Callable[[str, str, type], None]) -> None:
        self._add = add

    def scorer(self, name: str, cls: type) -> None:
        """A block scorer (subclass of ``sliminfer.strategies.base.Scorer``)."""
        self._add("scorer", name, cls)

    def schedule(self, name: str, cls: type) -> None:
        """A pruning schedule (subclass of ``sliminfer.strategies.base.Schedule``)."""
        self._add("schedule", name, cls)

    def cache_manager(self, name: str, cls: type) -> None:
        """A KV cache manager (subclass of ``sliminfer.cache.base.KVCacheManager``)."""
        self._add("cache", name, cls)

    def attention(self, name: str, cls: type) -> None:
        """A prefill attention strategy (subclass of ``sliminfer.strategies.attention.AttentionStrategy``)."""
        self._add("attention", name, cls)

    def prompt_filter(self, name: str, cls: type) -> None:
        """A prompt filter (subclass of ``sliminfer.strategies.prompt_filter.PromptFilter``)."""
        self._add("prompt_filter", name, cls)

    def model_adapter(self, cls: type) -> None:
        """A model adapter (subclass of ``sliminfer.models.base.ModelAdapter``), keyed by its model_types."""
        for model_type in cls.model_types:
            self._add("adapter", model_type, cls)


class Hookspecs:
    """The hooks plugins may implement (decorate implementations with ``sliminfer.hookimpl``)."""

    @hookspec
    def sliminfer_register(self, register: Register) -> None:
        """Register scorers, schedules, cache managers, attention strategies, prompt filters and model adapters."""

    @hookspec
    def sliminfer_prefill_start(self, event: events.PrefillStart) -> None:
        """Observe the start of a prefill."""

    @hookspec
    def sliminfer_prune(self, event: events.PruneDecision) -> None:
        """Observe each pruning decision."""

    @hookspec
    def sliminfer_prefill_end(self, event: events.PrefillEnd) -> None:
        """Observe the end of a prefill."""

    @hookspec
    def sliminfer_decode_step(self, event: events.DecodeStep) -> None:
        """Observe each generated token."""


HOOKS = tuple(name for name in vars(Hookspecs) if name.startswith(f"{PROJECT}_"))


__all__ = ["HOOKS", "PROJECT", "Hookspecs", "Register", "hookimpl", "hookspec"]
