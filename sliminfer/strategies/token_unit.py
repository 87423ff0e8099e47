"""SlimInfer's token-unit block scorer.

A block's score is the max over its token units (``unit_size`` consecutive tokens) of
``mean_h |q_h . k_unit(group(h))|``, where ``q_h`` is the mean of the last ``window`` queries of head
``h`` and ``k_unit`` the mean key of the unit in ``h``'s KV group. Scoring small units inside a block
keeps one strongly attended sentence from being averaged away by the rest of its block, which the
paper's ablation shows beats plain mean- or max-pooling of whole blocks.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from sliminfer.strategies.base import Scorer, ScorerConfig


def unit_mean_keys(keys: torch.Tensor, unit_size: int) -> torch.Tensor:
    """The mean key of each token unit, float32: ``[b, kv_heads, tokens, d]`` -> ``[b, kv_heads, tokens / unit_size, d]``
    (the scorer's own reduction; the offload manager keeps these per layer to score blocks at decode)."""
    batch, kv_heads, n_tokens, head_dim = keys.shape
    return keys.float().reshape(batch, kv_heads, n_tokens // unit_size, unit_size, head_dim).mean(dim=3)


class TokenUnitConfig(ScorerConfig):
    unit_size: int = Field(8, ge=1, description="Tokens per unit; must divide block_size.")

    @model_validator(mode="after")
    def _unit_divides_block(self) -> TokenUnitConfig:
        if self.block_size % self.unit_size:
            raise ValueError(
                f"unit_size {self.unit_size} must divide block_size {self.block_size}"
            )
        return self


class TokenUnitScorer(Scorer):
    """Block score = max over token units of the head-mean |local query . unit mean key| (the paper's)."""

    Config = TokenUnitConfig
    config: TokenUnitConfig
    combines_heads = True

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        batch, q_heads, _, head_dim = queries.shape
        kv_heads = keys.shape[1]
        units_per_block = self.block_size // self.config.unit_size
        q = queries.float().mean(dim=2)  # [b, Hq, d]
        k_units = unit_mean_keys(keys, self.config.unit_size)
        q = q.reshape(batch, kv_heads, q_heads // kv_heads, head_dim)  # query heads grouped by KV head
        dots = torch.einsum("bgrd,bgud->bgru", q, k_units).abs()  # [b, Hkv, group, units]
        unit_scores = self.mean_over_heads(dots, dim=(1, 2))  # mean over all query heads
        return unit_scores.reshape(batch, -1, units_per_block).amax(dim=-1)
