"""The KV cache manager interface.

A manager is created per request. The model's own attention modules call :meth:`update` exactly as
they would call a transformers ``Cache``; layers may hold different numbers of tokens because a pruned
layer only ever sees the survivors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from pydantic import BaseModel

from sliminfer.core.config import ConfigModel
from sliminfer.core.strategy import Strategy


class NoOptions(ConfigModel):
    """A cache manager without options."""


class KVCacheManager(Strategy, ABC):
    """Holds each layer's keys and values for one request."""

    Config: type[BaseModel] = NoOptions
    #: transformers' attention modules check this before treating the cache as a static one
    is_compileable = False

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
