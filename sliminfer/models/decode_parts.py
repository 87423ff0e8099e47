"""The pieces of a decoder layer's attention that a static-shape decode step needs.

The eager path lets the model's attention module do projections, RoPE, the cache write and the
attention call in one go. A decode step that a CUDA graph can capture must write its KV into fixed
buffers and run the attention itself, so it needs the parts around that call separately: queries,
keys and values exactly as the attention module computes them (projections with any bias, Qwen3's
per-head q/k norms, RoPE), the softmax scale, and the output projection.

``DecodeParts`` is a mixin for :class:`~sliminfer.models.base.ModelAdapter` (Llama layout; a model
laid out differently overrides these methods in its adapter). Until adapters inherit it,
:func:`bind_decode_parts` binds its methods to any adapter.
"""

from __future__ import annotations

from types import MethodType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter, PositionEmbeddings


class DecodeParts:
    """Attention pieces of one decoder layer, for callers that run the attention kernel themselves."""

    layers: Any
    _rope: Any

    def decode_qkv(
        self, layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` of ``hidden``'s tokens at ``layer``: ``[b, q_heads, n, d]`` and ``[b, kv_heads, n, d]``,
        after the input norm, projections, any q/k norm and RoPE (what the attention module feeds its kernel)."""
        block = self.layers[layer]
        attn = block.self_attn
        x = block.input_layernorm(hidden)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        q = attn.q_proj(x).view(shape)
        k = attn.k_proj(x).view(shape)
        v = attn.v_proj(x).view(shape)
        q_norm = getattr(attn, "q_norm", None)  # Qwen3: per-head RMS norm before RoPE
        if q_norm is not None:
            q, k = q_norm(q), attn.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = position_embeddings
        q, k = self._rope(q, k, cos, sin)
        return q, k, v

    def attention_scale(self, layer: int) -> float:
        return float(self.layers[layer].self_attn.scaling)

    def attention_output(self, layer: int, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """``hidden + o_proj(attn_out)``, ``attn_out`` being ``[b, n, q_heads * d]``."""
        return hidden + self.layers[layer].self_attn.o_proj(attn_out)


class BoundDecodeParts(NamedTuple):
    qkv: Any
    scale: Any
    output: Any


def bind_decode_parts(adapter: ModelAdapter) -> BoundDecodeParts:
    """The adapter's own methods if it is a :class:`DecodeParts`, else the mixin's bound to it."""
    if isinstance(adapter, DecodeParts):
        return BoundDecodeParts(adapter.decode_qkv, adapter.attention_scale, adapter.attention_output)
    return BoundDecodeParts(
        MethodType(DecodeParts.decode_qkv, adapter),
        MethodType(DecodeParts.attention_scale, adapter),
        MethodType(DecodeParts.attention_output, adapter),
    )
