"""``last_token``: LazyLLM's token importance, the last prompt token's attention averaged over heads.

LazyLLM (Fu et al., "LazyLLM: Dynamic Token Pruning for Efficient Long Context LLM Inference", arXiv
2407.14057) scores each prompt token at a pruning layer by the softmax attention the last token (the one
that predicts the next token) pays it, averaged over the heads, and keeps the top fraction of the tokens
present there; pruning progressively (several layers, fewer tokens each time) and keeping each kept
token's original position. Here that is this scorer plus the ``ratio`` schedule, which keeps a fraction
of the CURRENT tokens after each listed layer: the ``lazyllm`` presets (configs/*-lazyllm.yaml).

What is built: LazyLLM's prefill (TTFT) pruning. What is not: its auxiliary cache. LazyLLM re-selects
tokens at every decode step and may revive a token pruned before layer ``l`` by storing its hidden state
at ``l`` and computing its later layers only when a later step needs it. This engine's decode attends,
at each layer, to the prompt tokens that layer computed in the prefill (the resident set), and has no
path that runs a revived token through the layers above the one that pruned it: building one means a
second, per-step partial prefill inside the decode, which nothing here does yet. So decoding after a
``lazyllm`` prefill keeps the prefill's selection, as SlimInfer's does; the TTFT comparison is LazyLLM's,
the decode is not.

``block_size`` 1 (the default) scores tokens, as LazyLLM does; a larger one scores a block by its tokens'
summed attention. The window is the last token alone; the attention of a single query needs no causal
mask, so any block size is exact even when that token sits in the partial tail.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from sliminfer.strategies.base import Scorer, ScorerConfig
from sliminfer.strategies.window_attention import window_attention


class LastTokenConfig(ScorerConfig):
    block_size: int = Field(1, ge=1, description="Tokens per block (1: LazyLLM's token pruning).")
    window: int = Field(1, ge=1, description="Must be 1: LazyLLM scores by the last token's attention alone.")

    @field_validator("window")
    @classmethod
    def _last_token_only(cls, window: int) -> int:
        if window != 1:
            raise ValueError(f"last_token scores by the last token's attention alone, so window must be 1 (got "
                             f"{window}); for a window of queries use snapkv")
        return window


class LastTokenScorer(Scorer):
    """Block score = the last prompt token's softmax attention to its tokens, averaged over query heads."""

    Config = LastTokenConfig
    config: LastTokenConfig
    combines_heads = True

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        attention = self.mean_over_heads(window_attention(queries, keys)[:, :, :, 0], dim=(1, 2))  # [b, tokens]
        return attention.reshape(attention.shape[0], -1, self.block_size).sum(dim=-1)
