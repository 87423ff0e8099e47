"""``snapkv``: SnapKV's observation-window voting as a token scorer, usable with any schedule.

SnapKV (Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", arXiv 2404.14469)
observed that the attention the last prompt tokens pay to the rest of the prompt predicts which tokens
generation will attend to. Its score of a prompt token: the softmax attention it receives from the
last ``window`` queries (causal inside the window), summed over the window, then 1-D pooled over the
tokens so neighbours of an important token survive with it. SnapKV itself compresses each head's KV
after a full prefill (no TTFT gain); FastKV (arXiv 2502.01068) uses the same score to choose the tokens
whose hidden states propagate past one layer, which is how this project uses it: with a ``fixed`` or
``ratio`` schedule the tokens it ranks low are dropped from every later layer. FastKV's settings are the
``fastkv`` presets (configs/*-fastkv.yaml): this scorer with window 8, kernel 7, max pooling, and a
one-layer fixed schedule.

What differs from SnapKV and why:
- one token set for all heads: the votes are averaged over every query head (GQA: each head's group
  shares its KV head's keys), because dropping a hidden state drops the token for all heads. SnapKV keeps
  a different set per KV head; FastKV sums over all heads, which ranks tokens the same as the mean.
- the observation window itself is always kept, by the block-selection policy
  (:func:`~sliminfer.strategies.block_selection.window_blocks`), as SnapKV and FastKV keep it; its tokens'
  scores here are their unpooled votes. Unlike them, the first prompt token (the attention sink) is
  always kept as well, as every scorer's selection keeps it (it almost always ranks first anyway).
- the budget counts every kept token, sink and window included (FastKV: ``tsp_len`` includes the window).
Defaults: window 32, kernel 7, max pooling, SnapKV's LongBench settings (its repository's
``experiments/LongBench/config/ablation_c*_w32_k7_maxpool.json``).

Tokens only (``block_size`` 1): the window queries must be the last tokens among the scored keys for the
in-window causal mask to be right, which only single-token blocks guarantee (with larger blocks the
window may end in the unscored partial tail). For block scores from the last token alone, ``last_token``
takes any block size.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from sliminfer.strategies.base import Scorer, ScorerConfig
from sliminfer.strategies.window_attention import (
    Pooling,
    check_kernel_size,
    pool_over_keys,
    window_attention,
)


class SnapKVConfig(ScorerConfig):
    block_size: int = Field(1, ge=1, description="Must be 1: SnapKV scores single tokens.")
    window: int = Field(32, ge=1, description="Last prompt tokens whose attention votes (SnapKV: 32, FastKV: 8).")
    kernel_size: int = Field(7, ge=1, description="Odd 1-D pooling kernel over the tokens' votes; 1: no pooling.")
    pooling: Pooling = Field("max", description="max or avg pooling (SnapKV's and FastKV's runs: max).")

    @field_validator("block_size")
    @classmethod
    def _single_tokens(cls, block_size: int) -> int:
        if block_size != 1:
            raise ValueError(
                f"snapkv scores single tokens, so block_size must be 1 (got {block_size}): the window queries are "
                "masked causally against the scored keys, which must end with them; for block scores use "
                "last_token (any block size) or attention_unit"
            )
        return block_size

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, kernel_size: int) -> int:
        return check_kernel_size(kernel_size)


def snapkv_votes(queries: torch.Tensor, keys: torch.Tensor, kernel_size: int, pooling: Pooling) -> torch.Tensor:
    """Each key's votes per query head, ``[b, kv_heads, group, n]``: its softmax attention from the window
    queries summed over the window, pooled over the keys before the window (as SnapKV pools
    ``attn[..., :-window]``); the window's own keys keep their unpooled sums."""
    votes = window_attention(queries, keys).sum(dim=3)
    before = keys.shape[2] - queries.shape[2]
    return torch.cat([pool_over_keys(votes[..., :before], kernel_size, pooling), votes[..., before:]], dim=-1)


class SnapKVScorer(Scorer):
    """Token score = SnapKV's pooled observation-window attention votes, averaged over all query heads."""

    Config = SnapKVConfig
    config: SnapKVConfig
    combines_heads = True

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        votes = snapkv_votes(queries, keys, self.config.kernel_size, self.config.pooling)
        return self.mean_over_heads(votes, dim=(1, 2))
