"""Base class of the ``attention`` kind: how a layer's prefill attention is computed from its q/k/v.

Why the kind exists: pruning shortens every layer after the first pruning layer, but the layers up to
it still attend over the whole prompt, and at long prompts their attention is most of the prefill. Sparse
prefill attention (FlexPrefill, MInference: each head attends to the blocks or patterns it needs) cuts
exactly that cost, and is orthogonal to pruning; the next issue adds such methods as strategies of this
kind, applied to the layers that see the whole prompt. This module fixes the interface they implement,
and :func:`strategy_layers` which layers an ``attention:`` section means.

For a layer in the strategy's set, the engine runs the model adapter's decomposed attention block (input
norm, q/k/v projections, any q/k norm, RoPE, the cache update, then :meth:`AttentionStrategy.attend`,
then o_proj and the residual) instead of the attention module's forward. Decode steps never call it:
the kind is the prefill's attention.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

from sliminfer.core.config import ConfigModel
from sliminfer.core.errors import ConfigError
from sliminfer.core.strategy import Strategy

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter
    from sliminfer.strategies.base import Schedule


class AttentionConfig(ConfigModel):
    """An attention strategy's options (``dense`` has none; a sparse strategy adds its own fields)."""


class AttentionStrategy(Strategy, ABC):
    """Computes one layer's prefill attention from its queries, keys and values."""

    Config = AttentionConfig

    @abstractmethod
    def attend(
        self,
        adapter: ModelAdapter,
        layer: int,
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """The attention output of ``layer``'s prefill tokens.

        Args:
            adapter: the model's adapter; :meth:`~sliminfer.models.base.ModelAdapter.own_attention` is the
                layer's own backend (what ``dense`` returns, and a sparse strategy's fallback).
            layer: the 0-indexed decoder layer.
            module: the layer's attention module (``module.scaling`` is the softmax scale; the model's own
                attention function takes the module).
            query: ``[batch, q_heads, n, head_dim]``, after any q norm and RoPE.
            key, value: ``[batch, kv_heads, n_kv, head_dim]``, every token the layer attends to (RoPE applied
                to the keys; grouped-query heads not repeated): in a prefill the projections' own tensors, which
                the cache has stored, so their layout (strides) does not depend on the cache's buffers; any
                layout may come (contiguous with ``prefill.compile``).
            attention_mask: what the engine passes the layer: None where the backend applies causality
                itself (sdpa, flash), else the additive causal mask ``[1, 1, n, n_kv]`` (eager).

        Returns:
            ``[batch, n, q_heads * head_dim]``, the layout the layer's o_proj takes.
        """


def strategy_layers(layers: list[int] | None, schedule: Schedule | None, num_layers: int) -> frozenset[int]:
    """The layers an ``attention:`` section runs its strategy on, in a model of ``num_layers`` layers.

    ``layers`` null means the layers that see the whole prompt: every layer up to and including the
    schedule's first pruning layer, whose attention still runs over all tokens (the pruning comes after
    it); every layer when unpruned. Listed layers past the model raise a ConfigError naming
    ``attention.layers``, before any forward pass (the section's schema already refused negative and
    repeated indices).
    """
    if layers is None:
        first = min(schedule.layers, default=num_layers) if schedule is not None else num_layers
        return frozenset(range(min(first + 1, num_layers)))
    for layer in layers:
        if layer >= num_layers:
            raise ConfigError("attention.layers", layer, f"must be a layer index in 0..{num_layers - 1} (the model has "
                              f"{num_layers} layers), or null for the layers that see the whole prompt")
    return frozenset(layers)


__all__ = ["AttentionConfig", "AttentionStrategy", "strategy_layers"]
