"""Tokens handed to a transformers streamer while a decode runs, as ``model.generate`` hands them.

A streamer (``TextStreamer``, ``TextIteratorStreamer`` or any object with ``put`` and ``end``) gets the
prompt ids first (``[1, n]``, which ``skip_prompt=True`` streamers drop), then every new token as a
one-element tensor the moment the host knows it, EOS included, then ``end()``. Stop strings cut only
``GenerationResult.text``: the streamer has already shown the tokens that completed one.
:class:`HostTokens` is how the static decode gets each token to the host without stalling the device.
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


class HostTokens:
    """The tokens of the latest two steps, copied to pinned host memory without blocking: the host reads
    one step's token while the next step runs (a CUDA event per slot says when a copy has landed). The
    static decode streams through it."""

    def __init__(self, device: torch.device) -> None:
        cuda = device.type == "cuda"
        self.slots = torch.zeros(2, dtype=torch.long, pin_memory=cuda)
        self.events = [torch.cuda.Event(), torch.cuda.Event()] if cuda else None
        self.pushed = 0
        self.popped = 0

    def push(self, token: torch.Tensor) -> None:
        slot = self.pushed % 2
        self.slots[slot : slot + 1].copy_(token.reshape(1), non_blocking=True)
        if self.events is not None:
            self.events[slot].record()
        self.pushed += 1

    def pop(self) -> int:
        """The oldest token not yet popped (waits for its copy only)."""
        slot = self.popped % 2
        if self.events is not None:
            self.events[slot].synchronize()
        self.popped += 1
        return int(self.slots[slot])


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
