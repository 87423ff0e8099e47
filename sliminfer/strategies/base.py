"""Base classes of the pruning strategies: a scorer ranks blocks, a schedule says when and how many.

A new strategy is one small class with one method to override, plus a pydantic ``Config``; it plugs
in through ``sliminfer_register`` (see :mod:`sliminfer.core.registry`).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field

from sliminfer.core.config import ConfigModel
from sliminfer.core.errors import ConfigError
from sliminfer.core.strategy import Strategy

if TYPE_CHECKING:
    from sliminfer.models.sharding import HeadShards


class ScorerConfig(ConfigModel):
    """Fields every scorer has: the pipeline needs them to form blocks and window queries."""

    block_size: int = Field(64, ge=1, description="Tokens per block, the unit of keeping and dropping.")
    window: int = Field(4, ge=1, description="Last prompt tokens whose queries form the local query.")


class HeadMean:
    """The mean over query heads that stays right under tensor parallelism, for strategies that combine
    heads (scorers, prompt filters)."""

    #: set by the pipeline when tensor parallelism shards the heads (None: this process holds them all)
    head_shards: HeadShards | None = None

    def mean_over_heads(self, values: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
        """``values.mean(dim)`` where ``dim`` spans the query heads (and anything of equal size on every
        rank, such as the window queries): under tensor parallelism, the mean over all ranks' heads."""
        local = values.mean(dim=dim)
        return local if self.head_shards is None else self.head_shards.head_mean(local)


class Scorer(HeadMean, Strategy, ABC):
    """Scores the full blocks of the current token sequence at a pruning layer."""

    Config = ScorerConfig
    config: ScorerConfig

    #: True when :meth:`score_blocks` takes its mean over query heads with :meth:`mean_over_heads`, so its
    #: scores under tensor parallelism equal those of one process. Under tensor parallelism a scorer that
    #: does not is run on each rank's own heads and the first rank's scores decide (the pipeline warns).
    combines_heads: ClassVar[bool] = False

    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def window(self) -> int:
        return self.config.window

    @abstractmethod
    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """Score blocks; higher is more important.

        Args:
            queries: ``[batch, q_heads, window, head_dim]``, the last ``window`` tokens' queries as the
                attention sees them (after RoPE and any q/k norm).
            keys: ``[batch, kv_heads, n_full_blocks * block_size, head_dim]``, the keys of the tokens in
                full blocks, likewise after RoPE.

        Returns:
            ``[batch, n_full_blocks]`` float scores.
        """


class Schedule(Strategy, ABC):
    """Says after which layers to prune and how many prompt tokens to keep there."""

    @abstractmethod
    def budget(self, layer: int, tokens: int) -> int | None:
        """Tokens to keep after ``layer`` given ``tokens`` current ones, or None to keep them all."""

    @property
    def layers(self) -> tuple[int, ...]:
        """The layers after which it may prune, increasing: its config's ``layers`` (both built-ins have
        one). The model check and the default layers of an ``attention:`` section (up to the first pruning
        layer) read it; a schedule that prunes after other layers overrides it."""
        return tuple(getattr(self.config, "layers", ()))

    def check_block_size(self, block_size: int, field: str) -> None:
        """Raise a ConfigError if the schedule cannot work with this block size."""

    @property
    def smallest_budget(self) -> int | None:
        """Its smallest absolute budget in tokens, which the engine checks against what a stage always keeps
        (the sink and the scorer's window blocks); None (the default) for budgets relative to the tokens
        present, which cannot be checked before a prompt."""
        return None

    def check_model(self, num_layers: int, field: str) -> None:
        """Raise a ConfigError if a pruning layer does not exist in a model with ``num_layers`` layers."""
        for layer in self.layers:
            if layer >= num_layers:
                raise ConfigError(f"{field}.layers", layer, f"must be a layer index in 0..{num_layers - 1}")


def check_layers(layers: list[int]) -> list[int]:
    """Pruning layers are 0-indexed, non-negative and strictly increasing."""
    if any(layer < 0 for layer in layers):
        raise ValueError(f"layers must be >= 0; got {layers}")
    if any(b <= a for a, b in itertools.pairwise(layers)):
        raise ValueError(f"layers must be strictly increasing with no repeats; got {layers}")
    return layers
