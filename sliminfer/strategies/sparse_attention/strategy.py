"""The sparse prefill attention strategies: ``minference`` and ``flexprefill`` (the ``attention`` kind).

Each layer in the section's set estimates, per head, which key blocks its queries need
(:mod:`.estimate`), then runs block-sparse attention over them (:mod:`.kernel`). Pruning and sparse
attention compose: by default (``layers: null``) the strategy runs on the layers that see the whole
prompt, the ones pruning does not shorten.

Two rules are the same for both, in :class:`SparseAttention`:

- dense below a threshold: a layer seeing fewer than ``min_tokens`` tokens calls the layer's own dense
  attention (at short prompts the estimate costs more than the sparsity saves, and the methods were
  tuned on long ones). It is recorded like any other call: that layer's density is 1.0;
- a fixed density: with ``density`` set, each head keeps that fraction of its causal blocks, the ones
  its estimator scores highest (the sink and the diagonal always among them), instead of the method's
  own budget rule; benchmarks compare speed at 5 / 10 / 20 % this way.

What each call computed is kept in :attr:`SparseAttention.densities` (per layer, per batch and head),
and :attr:`SparseAttention.last_density` is that of the latest call, so a run can report how sparse it
really was; nothing about the choice is silent.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, Protocol

import torch
from pydantic import Field

from sliminfer.strategies.attention import AttentionConfig, AttentionStrategy
from sliminfer.strategies.sparse_attention.blocks import BlockSelection
from sliminfer.strategies.sparse_attention.estimate import (
    FlexPrefillEstimate,
    MInferenceEstimate,
    top_density,
)
from sliminfer.strategies.sparse_attention.kernel import block_sparse_attention

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter

log = logging.getLogger(__name__)


class Estimate(Protocol):
    """What an estimator gives (:mod:`.estimate`): a score per block of each head's grid."""

    def scores(self) -> torch.Tensor: ...


class SparseAttentionConfig(AttentionConfig):
    """Fields every sparse prefill attention has."""

    block_size: int = Field(128, ge=16, multiple_of=16, description=(
        "Tokens per query and key block, the unit the kernel skips or computes (a multiple of 16: the tile "
        "granularity of the FlexAttention kernel)."))
    min_tokens: int = Field(4096, ge=1, description=(
        "Dense below this many tokens: a layer that sees fewer prompt tokens runs its own dense attention "
        "(recorded as density 1.0)."))
    density: float | None = Field(None, gt=0.0, le=1.0, description=(
        "Fixed density override: each head keeps this fraction of its causal blocks, the highest by the "
        "estimator's scores (sink and diagonal always among them); null: the method's own budget rule."))


class SparseAttention(AttentionStrategy, ABC):
    """Base of the block-sparse prefill attentions: threshold, density override, the kernel call."""

    Config = SparseAttentionConfig
    config: SparseAttentionConfig

    def __init__(self, config: SparseAttentionConfig) -> None:
        super().__init__(config)
        #: per layer, the fraction of causal blocks each (batch, head) computed in its latest call (on the
        #: attention's device; 1.0 where the dense-below-threshold rule applied)
        self.densities: dict[int, torch.Tensor] = {}
        self._last_layer: int | None = None

    @property
    def last_density(self) -> float | None:
        """The fraction of causal blocks the latest call computed over all heads (1.0: dense), or None
        before any call."""
        return None if self._last_layer is None else float(self.densities[self._last_layer].mean())

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
        """Block-sparse causal attention (the eager backend's ``attention_mask`` is the plain causal mask,
        which the kernel applies itself); the layer's own attention below ``min_tokens``."""
        b, heads, n, _ = query.shape
        self._last_layer = layer
        if n < self.config.min_tokens:
            log.debug("layer %d: %d tokens < min_tokens %d: dense attention", layer, n, self.config.min_tokens)
            self.densities[layer] = torch.ones(b, heads, device=query.device)
            return adapter.own_attention(module, query, key, value, attention_mask)
        selection = self.select(query, key, module.scaling)
        self.densities[layer] = selection.densities()
        log.debug("layer %d: %s over %d tokens, blocks of %d", layer, type(self).__name__, n, self.config.block_size)
        out = block_sparse_attention(query, key, value, selection, module.scaling)
        return out.transpose(1, 2).reshape(b, n, -1)

    def select(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> BlockSelection:
        """The blocks each head computes: the method's own rule, or the ``density`` override's top blocks
        by the estimate's scores."""
        estimate = self.estimate(query, key, scale)
        if self.config.density is not None:
            grid = top_density(estimate.scores(), self.config.density)
        else:
            grid = self.keep(estimate)
        return BlockSelection.from_grid(grid, self.config.block_size, query.shape[2])

    @abstractmethod
    def estimate(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> Estimate:
        """The method's estimate of each head's attention (its ``scores()``: ``[b, q_heads, blocks, blocks]``,
        higher kept first under a fixed ``density``)."""

    @abstractmethod
    def keep(self, estimate: Any) -> torch.Tensor:
        """The method's kept-block grid ``[b, q_heads, blocks, blocks]`` from its ``estimate`` (booleans;
        causality, the sink and the diagonal are added by :meth:`BlockSelection.from_grid`)."""


class MInferenceConfig(SparseAttentionConfig):
    """MInference's vertical-and-slash options (its defaults: arXiv 2407.02490 and its code)."""

    vertical_size: int = Field(1000, ge=1, description=(
        "Key columns kept per head: the most attended by the last queries (the first 30 always among them)."))
    slash_size: int = Field(6096, ge=1, description=(
        "Diagonals (query - key offsets) kept per head: the most attended (the 100 nearest always among them)."))
    last_queries: int = Field(64, ge=1, description="Last prompt queries whose attention estimates the pattern.")


class MInferenceAttention(SparseAttention):
    """MInference vertical-slash sparse prefill attention: top columns and diagonals of the last queries."""

    Config = MInferenceConfig
    config: MInferenceConfig

    def estimate(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> MInferenceEstimate:
        return MInferenceEstimate.of(query, key, scale, self.config.block_size, self.config.last_queries)

    def keep(self, estimate: MInferenceEstimate) -> torch.Tensor:
        return estimate.keep(self.config.vertical_size, self.config.slash_size)


class FlexPrefillConfig(SparseAttentionConfig):
    """FlexPrefill's options (its defaults: arXiv 2502.20766 and its code)."""

    gamma: float = Field(0.9, gt=0.0, le=1.0, description=(
        "Cumulative estimated attention each head's kept blocks must reach (1.0: every causal block)."))
    tau: float = Field(0.1, ge=0.0, le=1.0, description=(
        "Pattern threshold: a head whose pooled estimate is within this sqrt(Jensen-Shannon divergence) of "
        "its last block's attention is query-aware, else vertical-slash (0: never query-aware)."))
    min_budget: int = Field(1024, ge=0, description=(
        "Tokens of columns and of diagonals each head keeps at least (rounded up to blocks)."))


class FlexPrefillAttention(SparseAttention):
    """FlexPrefill sparse prefill attention: per head query-aware or vertical-slash, to a gamma of attention."""

    Config = FlexPrefillConfig
    config: FlexPrefillConfig

    def estimate(self, query: torch.Tensor, key: torch.Tensor, scale: float) -> FlexPrefillEstimate:
        return FlexPrefillEstimate.of(query, key, scale, self.config.block_size, self.config.tau)

    def keep(self, estimate: FlexPrefillEstimate) -> torch.Tensor:
        return estimate.keep(self.config.gamma, self.config.min_budget)


__all__ = [
    "FlexPrefillAttention",
    "FlexPrefillConfig",
    "MInferenceAttention",
    "MInferenceConfig",
    "SparseAttention",
    "SparseAttentionConfig",
]
