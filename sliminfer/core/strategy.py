"""The root of the extension API: :class:`Strategy`, the base of everything the registry holds.

This module is a leaf on purpose: it imports nothing else of sliminfer, so the base class of each kind
(``Scorer`` and ``Schedule`` in :mod:`sliminfer.strategies.base`, ``AttentionStrategy`` in
:mod:`sliminfer.strategies.attention`, ``KVCacheManager`` in :mod:`sliminfer.cache.base`,
``ModelAdapter`` in :mod:`sliminfer.models.base`) can derive from it, and the registry
(:mod:`sliminfer.core.registry`) can import those bases directly, without any of them importing the
registry back. ``tests/test_import_graph.py`` keeps it that way.

Plugin authors do not need it: they subclass the base of the kind they write.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pydantic import BaseModel


class Strategy:
    """What the registry holds: a scorer, schedule, cache manager or attention strategy, with a pydantic
    ``Config`` and a constructor taking a validated instance of it, or a model adapter (``ModelAdapter``),
    which keys itself by its ``model_types`` and is constructed from the model instead."""

    Config: ClassVar[type[BaseModel]]

    def __init__(self, config: BaseModel) -> None:
        self.config = config


__all__ = ["Strategy"]
