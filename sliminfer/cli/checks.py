"""The commands' argument checks, one function per rule, shared by every command that takes such a flag.

Each raises :class:`~sliminfer.core.errors.ConfigError` naming the flag, the value and what is allowed,
which ``sliminfer.cli.main.main`` prints as one ``sliminfer CMD: error: ...`` line (exit 2). A command
calls them first thing in its ``_run``, before any config, model or measurement, so a typo costs
nothing. (argparse ``type=`` functions would report through argparse's usage-and-exit path instead.)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sliminfer.core.errors import ConfigError

DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def _why(what: str) -> str:
    return f" ({what})" if what else ""


def _which(values: Sequence[object], bad: Sequence[object]) -> str:
    """'; not 0, 5': the refused items of a list of several (one item is named by the value already)."""
    return f"; not {', '.join(map(str, bad))}" if bad and len(values) > 1 else ""


def positive_int(flag: str, value: int, what: str = "") -> None:
    """``value`` >= 1, e.g. ``--repeats`` (``what`` says what it counts)."""
    if value < 1:
        raise ConfigError(flag, value, f"must be at least 1{_why(what)}")


def non_negative_int(flag: str, value: int, what: str = "") -> None:
    """``value`` >= 0, e.g. ``--warmup``."""
    if value < 0:
        raise ConfigError(flag, value, f"must be at least 0{_why(what)}")


def positive_ints(flag: str, values: Sequence[int], what: str = "") -> None:
    """A non-empty list of counts, each >= 1 (prompt and context lengths in tokens)."""
    values = list(values)
    if not values:
        raise ConfigError(flag, values, f"give at least one value{_why(what)}")
    bad = [v for v in values if v < 1]
    if bad:
        raise ConfigError(flag, values, f"each must be at least 1{_why(what)}{_which(values, bad)}")


def fraction(flag: str, value: float, what: str = "") -> None:
    """A finite number in [0, 1] (nan and inf refused)."""
    if not 0.0 <= value <= 1.0:  # False for nan too
        raise ConfigError(flag, value, f"must be a number in [0, 1]{_why(what)}")


def fractions(flag: str, values: Sequence[float], what: str = "") -> None:
    """A non-empty list of finite numbers in [0, 1]."""
    values = list(values)
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad or not values:
        raise ConfigError(flag, values, f"each must be a number in [0, 1]{_why(what)}{_which(values, bad)}")


def output_dir(flag: str, path: Path | str) -> None:
    """A directory to write into, created if missing: refused when it, or a folder above it, is a file."""
    path = Path(path)
    for existing in (path, *path.parents):
        if existing.exists():
            if existing.is_dir():
                return
            if existing == path:
                raise ConfigError(flag, str(path), "an existing file, give a directory (created if missing)")
            raise ConfigError(flag, str(path), f"{str(existing)!r} above it is an existing file, give a directory "
                                               "(created if missing)")
        # a missing folder: look at the one above it


def device(flag: str, value: str) -> None:
    """A device of the ``model.device`` forms (auto, cpu, cuda, cuda:N), and CUDA only where there is one: the
    config's own rules (its pattern, :func:`~sliminfer.core.loading.resolve_device`), named after the flag."""
    from pydantic import ValidationError

    from sliminfer.core.loading import resolve_device
    from sliminfer.core.sections import ModelSection

    try:
        ModelSection(device=value)
    except ValidationError:
        raise ConfigError(flag, value, f"choose {DEVICE_FORMS}") from None
    resolve_device(value, flag)


__all__ = ["DEVICE_FORMS", "device", "fraction", "fractions", "non_negative_int", "output_dir", "positive_int",
           "positive_ints"]
