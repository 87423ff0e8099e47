"""``gemfilter``: GemFilter's prompt filter, early layers choose the tokens the whole model then runs on.

GemFilter (Shi et al., "Discovering the Gems in Early Layers: Accelerating Long-Context LLMs with 1000x
Input Token Reduction", arXiv 2409.17422) observed that an early layer's attention from the last prompt
token already points at the tokens the answer needs. It runs the first layers up to a filter layer
``r``, ranks the prompt tokens by the last query row at ``r`` summed over the heads, keeps the top ``k``
in their original order, and runs the WHOLE model again on just those token ids, positions re-encoded
``0 .. k - 1``, generating from that second pass. The engine's two-pass flow is the ``prompt_filter``
kind (:mod:`sliminfer.strategies.prompt_filter`); this is its selection.

Defaults are the authors' code (github.com/SalesforceAIResearch/GemFilter, ``my_baseline/GemFilter``):
filter layer 13 (0-indexed, ``select_layer_idx = 13``: layers 0-12 run, layer 13's q/k score) and
``topk = 1024`` for Llama-3.1-8B-Instruct; the score is the raw ``q . k`` of the last query (after RoPE,
not scaled, no softmax) summed over heads and average-pooled with kernel 5 (``standard_dis_index(...,
pool=True, sum_over_heads=True)``). ``score: attention`` ranks by the last row's softmax attention
instead (the paper's wording; what ``output_attentions`` returns), and ``kernel_size: 1`` drops the
pooling. Ties aside, summing over heads ranks as the mean over heads does, which is what this takes (so
tensor-parallel ranks combine their heads, :class:`~sliminfer.strategies.base.HeadMean`).

What differs: nothing in the selection (pure top-k: neither the first nor the last token is forced, as in
the authors' code). The first pass keeps no KV and stops at layer ``r``'s projections, where the authors'
code also runs layer ``r``'s attention; the output is the same. A prompt of at most ``tokens`` tokens is
not filtered (the authors' code keeps ``min(topk, n)`` tokens: all of them, in order, the same prompt).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from sliminfer.strategies.prompt_filter import PromptFilter, PromptFilterConfig
from sliminfer.strategies.window_attention import (
    check_kernel_size,
    pool_over_keys,
    window_attention,
)


class GemFilterConfig(PromptFilterConfig):
    layer: int = Field(13, ge=0, description="0-indexed filter layer whose last-row scores choose the tokens.")
    tokens: int = Field(1024, ge=1, description="Tokens kept (top-k); a prompt of at most this many is not filtered.")
    score: Literal["dot", "attention"] = Field(
        "dot", description="dot: the last query's raw q.k (the authors' code); attention: its softmax attention.")
    kernel_size: int = Field(5, ge=1, description="Odd average-pooling kernel over the tokens' scores; 1: none.")

    @field_validator("kernel_size")
    @classmethod
    def _odd_kernel(cls, kernel_size: int) -> int:
        return check_kernel_size(kernel_size)


class GemFilter(PromptFilter):
    """Keep the top ``tokens`` prompt tokens by the last query row at ``layer`` (summed over heads), in order."""

    Config = GemFilterConfig
    config: GemFilterConfig

    @property
    def layer(self) -> int:
        return self.config.layer

    def filters(self, n_tokens: int) -> bool:
        return n_tokens > self.config.tokens

    def select(self, query: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        if self.config.score == "attention":
            per_head = window_attention(query, keys)[:, :, :, 0]  # [1, kv_heads, group, n]
        else:
            batch, q_heads, _, head_dim = query.shape
            q = query.float().reshape(batch, keys.shape[1], q_heads // keys.shape[1], head_dim)
            per_head = torch.einsum("bgrd,bgkd->bgrk", q, keys.float())
        scores = pool_over_keys(self.mean_over_heads(per_head, dim=(1, 2)), self.config.kernel_size, "avg")[0]
        return torch.topk(scores, min(self.config.tokens, scores.numel())).indices.sort().values
