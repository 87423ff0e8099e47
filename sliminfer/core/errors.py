"""Exceptions that sliminfer raises on purpose.

Every error a user can cause by a bad config, a bad prompt or a missing file is one of these, raised
before any forward pass starts, with a message that names the field, the value and what is allowed.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SlimInferError(Exception):
    """Base class of every error sliminfer raises on purpose."""


class ConfigError(SlimInferError, ValueError):
    """A configuration value is invalid: the message names the field path, the value and the rule."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(f"{field}: got {value!r}; {allowed}")


class UnknownNameError(SlimInferError, KeyError):
    """A strategy, adapter or preset name that nothing registered."""

    def __init__(self, kind: str, name: str, available: Iterable[str], field: str | None = None) -> None:
        available = sorted(available)
        self.kind, self.name, self.available = kind, name, available
        close = difflib.get_close_matches(name, available, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        where = f"{field}: " if field else ""
        self.message = f"{where}unknown {kind} {name!r}.{hint} Available: {', '.join(available) or '(none)'}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would print the repr of the message otherwise
        return self.message


class UnsupportedModelError(SlimInferError, ValueError):
    """The model's architecture has no registered adapter, or uses a feature the adapter refuses."""


class InputError(SlimInferError, ValueError):
    """A prompt that cannot be run: empty, too long for the model, or a batch shape that is refused."""
