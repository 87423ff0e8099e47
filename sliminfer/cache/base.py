"""The KV cache manager interface, and everything the engine may ask of a manager.

A manager is created per request. The model's own attention modules call :meth:`update` exactly as
they would call a transformers ``Cache``; layers may hold different numbers of tokens because a pruned
layer only ever sees the survivors.

The engine never checks a manager's name or class: it asks. :attr:`spans_devices` (may a model's
layers sit on several devices?), :attr:`wants_queries` / :attr:`query_layers` / :meth:`observe_query`
(does the decode hand it the current queries before each such layer's attention?),
:meth:`offer_static_buffers` and :meth:`static_run` (how the static decode gets the prompt KV), and
:attr:`memory_saving` / :attr:`memory_advice` (what an out-of-memory message suggests), and
:attr:`prefill_chunk_tokens` (should the prefill bound its activations?). The defaults
describe a plain manager that holds every layer's KV on the model's device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel

from sliminfer.core.config import ConfigModel
from sliminfer.core.strategy import Strategy

if TYPE_CHECKING:
    from sliminfer.decode.run import StaticRun


class NoOptions(ConfigModel):
    """A cache manager without options."""


class KVCacheManager(Strategy, ABC):
    """Holds each layer's keys and values for one request."""

    Config: type[BaseModel] = NoOptions
    #: transformers' attention modules check this before treating the cache as a static one
    is_compileable = False
    #: the model's layers may sit on several devices (``device_map``): the manager keeps each layer's KV
    #: on that layer's device
    spans_devices: ClassVar[bool] = True
    #: for an out-of-memory message: how to choose this manager to save GPU memory (None: it does not)
    memory_saving: ClassVar[str | None] = None
    #: for an out-of-memory message while this manager is in use: what to lower (None: nothing of its own)
    memory_advice: ClassVar[str | None] = None

    def setup(self, num_layers: int, reserve_tokens: int) -> None:
        """Prepare for ``num_layers`` layers; ``reserve_tokens`` generated tokens will follow the prompt."""
        self.num_layers = num_layers
        self.reserve_tokens = reserve_tokens

    @abstractmethod
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this step's keys/values of ``layer_idx``; return everything the layer attends to."""

    @abstractmethod
    def layer_keys(self, layer_idx: int) -> torch.Tensor:
        """The keys the layer holds now, ``[batch, kv_heads, tokens, head_dim]``, on the model's device."""

    @abstractmethod
    def layer_values(self, layer_idx: int) -> torch.Tensor:
        """The values the layer holds now, like :meth:`layer_keys`."""

    @abstractmethod
    def layer_tokens(self, layer_idx: int) -> int:
        """Tokens whose KV the layer holds now."""

    @abstractmethod
    def layer_kv_bytes(self, layer_idx: int) -> int:
        """Bytes of the layer's keys plus values (held tokens only, not spare capacity)."""

    def kv_bytes(self) -> list[int]:
        return [self.layer_kv_bytes(i) for i in range(self.num_layers)]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """transformers' name for :meth:`layer_tokens`."""
        return self.layer_tokens(layer_idx)

    # what the decode may ask ----------------------------------------------------------------------
    @property
    def wants_queries(self) -> bool:
        """True when the decode must pass the layers in :attr:`query_layers` their current queries
        (:meth:`observe_query`) before their attention (a manager that picks KV by the queries)."""
        return False

    @property
    def query_layers(self) -> frozenset[int]:
        return frozenset()

    def observe_query(self, layer_idx: int, query: torch.Tensor) -> None:
        """The current decode token's queries at ``layer_idx``, ``[1, q_heads, 1, d]`` as the attention
        sees them (after any q norm and RoPE); called before the layer's attention and :meth:`update`,
        only for :attr:`query_layers` while :attr:`wants_queries`."""

    @property
    def prefill_chunk_tokens(self) -> int | None:
        """Run the prefill's position-wise work (each layer's MLP) over at most this many tokens at a
        time (None: all at once, the fastest). A manager that exists to lower GPU memory asks for it: at
        128k tokens an 8B model's MLP activations alone take about 10 GiB, more than the KV it saves.
        The result is the same either way (each token's MLP reads only that token)."""
        return None

    def offer_static_buffers(self, keys: list[torch.Tensor], values: list[torch.Tensor], spare: int) -> None:
        """A static decoder's per-layer buffers ``[1, kv_heads, capacity, d]``, offered before a prefill: a
        manager may store a layer's prompt KV in them (when it fits with ``spare`` rows left for the new
        tokens), and then the decoder copies nothing. Ignoring the offer (the default) is always correct."""

    def static_run(self) -> StaticRun | None:
        """The static decode this manager brings itself, or None (the default): the generic static decoder
        then reads the prompt KV through :meth:`layer_keys` / :meth:`layer_values` after the prefill."""
        return None
