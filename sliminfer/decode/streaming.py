"""Tokens handed to a transformers streamer while a decode runs, as ``model.generate`` hands them.

A streamer (``TextStreamer``, ``TextIteratorStreamer`` or any object with ``put`` and ``end``) gets the
prompt ids first (``[1, n]``, which ``skip_prompt=True`` streamers drop), then every new token as a
one-element tensor the moment the host knows it, EOS included, then ``end()``. Stop strings cut only
``GenerationResult.text``: the streamer has already shown the tokens that completed one.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from sliminfer.core.errors import ConfigError


@dataclass(frozen=True)
class TokenSink:
    """Where a decode puts each new token id, and the ids after which a decode that could go on stops
    (the static decode, which otherwise runs every step and cuts at EOS afterwards)."""

    emit: Callable[[int], None]
    stop_ids: frozenset[int]

    def take(self, token: int) -> bool:
        """Hand ``token`` over; True when the decode should stop after it."""
        self.emit(token)
        return token in self.stop_ids


def check_streamer(streamer: Any) -> None:
    """Refuse anything that is not a streamer before the prefill, rather than on the first token."""
    if streamer is not None and not all(callable(getattr(streamer, name, None)) for name in ("put", "end")):
        raise ConfigError("streamer", f"<{type(streamer).__name__}>", "must be a transformers streamer (TextStreamer, "
                          "TextIteratorStreamer) or any object with put(tensor) and end() methods")


@contextmanager
def streaming(streamer: Any, prompt: torch.Tensor, stop_ids: Collection[int]) -> Iterator[TokenSink | None]:
    """A sink feeding ``streamer`` (None without one): the prompt now, each token as it comes, and ``end()``
    when the decode is over, even when it fails (so a reader of an iterator streamer never waits forever)."""
    if streamer is None:
        yield None
        return
    streamer.put(prompt.cpu())
    try:
        yield TokenSink(lambda token: streamer.put(torch.tensor([token])), frozenset(stop_ids))
    finally:
        streamer.end()
