"""A softmax-attention block scorer (SnapKV / FastKV style), as an alternative to the paper's.

Block score = max over its token units of the unit's attention mass, where a token's mass is its
softmax attention probability from the last ``window`` queries, averaged over those queries and all
query heads. On small models the paper's unnormalised ``|q . k|`` score can rank the block a query
actually attends to near the bottom (measured on SmolLM2-135M: a passkey block that softmax attention
ranks first from layer 18 on was ranked 46th-59th of 60 by ``token_unit``); the softmax keeps each
head's preference sharp instead of letting high-magnitude heads dominate.
"""

from __future__ import annotations

import math

import torch

from sliminfer.strategies.token_unit import TokenUnitConfig
from sliminfer.strategies.base import Scorer


class AttentionUnitScorer(Scorer):
    """Block score = max over token units of the mean softmax attention mass from the window queries."""

    Config = TokenUnitConfig
    config: TokenUnitConfig
    combines_heads = True

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        batch, q_heads, window, head_dim = queries.shape
        kv_heads, n_tokens = keys.shape[1], keys.shape[2]
        group = q_heads // kv_heads
        q = queries.float().reshape(batch, kv_heads, group * window, head_dim)
        logits = torch.einsum("bgqd,bgkd->bgqk", q, keys.float()) / math.sqrt(head_dim)
        mass = self.mean_over_heads(logits.softmax(dim=-1), dim=(1, 2))  # [b, tokens], all query heads
        unit = self.config.unit_size
        units = mass.reshape(batch, n_tokens // unit, unit).sum(dim=-1)
        return units.reshape(batch, -1, self.block_size // unit).amax(dim=-1)
