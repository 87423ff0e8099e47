"""Base class of the ``prompt_filter`` kind: choose the prompt's tokens from an early layer, then prefill
only those.

Why a kind of its own: pruning (scorer + schedule) drops tokens between layers of ONE pass, keeping each
survivor's hidden state and original position. A prompt filter (GemFilter, arXiv 2409.17422) instead
runs the first layers only to choose tokens, throws that pass away, and runs the whole model again on
the chosen token ids as if they were the prompt, positions re-encoded ``0 .. m - 1``. The engine
(:meth:`~sliminfer.core.forward.StagedForward.prefill`) asks the filter which layer it reads
(:attr:`PromptFilter.layer`) and whether a prompt is long enough to filter (:meth:`PromptFilter.filters`);
the first pass runs the layers below it with their own attention and keeps no KV; the filter's
:meth:`PromptFilter.select` chooses from that layer's queries and keys; the second pass is the ordinary
prefill (pruning and attention strategies apply to it) over the chosen ids, and decoding continues at
position ``m``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from sliminfer.core.config import ConfigModel
from sliminfer.core.errors import ConfigError
from sliminfer.core.strategy import Strategy
from sliminfer.strategies.base import HeadMean


class PromptFilterConfig(ConfigModel):
    """A prompt filter's options (each filter adds its own fields)."""


class PromptFilter(HeadMean, Strategy, ABC):
    """Chooses, from one layer's queries and keys, the prompt tokens the prefill proper runs on."""

    Config = PromptFilterConfig

    @property
    @abstractmethod
    def layer(self) -> int:
        """The 0-indexed layer whose queries and keys :meth:`select` reads; the first pass runs layers
        ``0 .. layer - 1`` (and that layer's projections)."""

    @abstractmethod
    def filters(self, n_tokens: int) -> bool:
        """Whether a prompt of ``n_tokens`` tokens is filtered at all (False: the prefill runs on the whole
        prompt, with no first pass)."""

    @abstractmethod
    def select(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The kept tokens' positions in the prompt, ascending and distinct, ``[m]`` (long, on the keys'
        device).

        Args:
            query: ``[1, q_heads, 1, d]``, the last prompt token's queries at :attr:`layer`, as the attention
                sees them (after any q norm and RoPE).
            keys: ``[1, kv_heads, n, d]``, every prompt token's keys at :attr:`layer`, likewise.
        """

    def check_model(self, num_layers: int, field: str) -> None:
        """Raise a ConfigError naming ``field.layer`` if :attr:`layer` is not a layer of a model with
        ``num_layers`` layers (checked before any forward pass, from config.json when loading one)."""
        if self.layer >= num_layers:
            raise ConfigError(f"{field}.layer", self.layer, f"must be a layer index in 0..{num_layers - 1} (the model "
                              f"has {num_layers} layers)")


__all__ = ["PromptFilter", "PromptFilterConfig"]
