"""``dense``: the layer's own attention backend, through the decomposed attention block.

It computes what the layer's module would (the function transformers calls for
``config._attn_implementation``: sdpa, eager, flash...), so prefill logits and KV equal the path without
an ``attention:`` section bit for bit. That makes it the reference a sparse strategy is measured against,
and the proof that the engine's decomposed block is the module's forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from sliminfer.strategies.attention import AttentionStrategy

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter


class DenseAttention(AttentionStrategy):
    """The layer's own attention backend (sdpa / eager / flash, as the model's config says): exact."""

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
        return adapter.own_attention(module, query, key, value, attention_mask)
