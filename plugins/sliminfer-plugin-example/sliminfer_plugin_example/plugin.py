"""The example plugin's hooks: it registers the ``key_norm`` scorer and observes pruning decisions.

``KeyNormScorer`` ranks blocks without attention scores: Devoto et al. (2024, "A Simple and Effective
L2 Norm-Based Strategy for KV Cache Compression") found that keys with a LOW L2 norm draw the most
attention, so a token's score is minus its key norm (averaged over KV heads), optionally blended with
the key's projection on the local query's direction, which is in the same units (a length along the
key space), so the blend needs no rescaling. A block scores as its best token, so one
attention-drawing token keeps its block, as in the token-unit scorer.

The observer shows the other half of the plugin API: ``sliminfer_prune`` receives a
:class:`sliminfer.core.events.PruneDecision` after every pruning step. It logs it at DEBUG and keeps
a small record (plain ints, so no tensor or device memory is held) of the last 1000 in
:data:`DECISIONS`.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

import torch
from pydantic import Field

import sliminfer
from sliminfer.core.events import PruneDecision
from sliminfer.strategies.base import Scorer, ScorerConfig

logger = logging.getLogger(__name__.rsplit(".", 1)[0])


class KeyNormConfig(ScorerConfig):
    query_weight: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="0: rank by low key norm alone (query-free); 1: by |key . unit local query|; between: a blend.",
    )


class KeyNormScorer(Scorer):
    """Block score = max over its tokens of (1-w)(-mean_kv ||k||) + w mean_h |q_h/||q_h|| . k| (low-norm keys)."""

    Config = KeyNormConfig
    config: KeyNormConfig

    def score_blocks(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        batch, kv_heads, n_tokens, head_dim = keys.shape
        w = self.config.query_weight
        k = keys.float()
        token_scores = -k.norm(dim=-1).mean(dim=1) * (1.0 - w)  # [b, n]
        if w > 0.0:
            q = queries.float().mean(dim=2)  # [b, Hq, d], the local query of each head
            q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-6)
            q = q.reshape(batch, kv_heads, -1, head_dim)  # query heads grouped by KV head
            projection = torch.einsum("bgrd,bgnd->bgrn", q, k).abs().mean(dim=(1, 2))  # [b, n]
            token_scores = token_scores + w * projection
        return token_scores.reshape(batch, n_tokens // self.block_size, self.block_size).amax(dim=-1)


@dataclass(frozen=True)
class PruneRecord:
    """One observed pruning decision."""

    layer: int
    budget: int
    tokens_before: int
    tokens_kept: int


DECISIONS: deque[PruneRecord] = deque(maxlen=1000)
"""The most recent pruning decisions this process made, oldest first."""


@sliminfer.hookimpl
def sliminfer_register(register: sliminfer.Register) -> None:
    register.scorer("key_norm", KeyNormScorer)


@sliminfer.hookimpl
def sliminfer_prune(event: PruneDecision) -> None:
    record = PruneRecord(event.layer, event.budget, event.tokens_before, int(event.kept_positions.numel()))
    DECISIONS.append(record)
    logger.debug("layer %d: kept %d of %d tokens (budget %d)", record.layer, record.tokens_kept,
                 record.tokens_before, record.budget)
