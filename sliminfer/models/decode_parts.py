"""The pieces of a decoder layer's attention that a static-shape decode step needs.

The eager path lets the model's attention module do projections, RoPE, the cache write and the
attention call in one go. A decode step that a CUDA graph can capture must write its KV into fixed
buffers and run the attention itself, so it needs the parts around that call separately: queries,
keys and values exactly as the attention module computes them (projections with any bias, Qwen3's
per-head q/k norms, RoPE), the softmax scale, and the output projection.

``DecodeParts`` is a base of :class:`~sliminfer.models.base.ModelAdapter` (Llama layout; a model laid
out differently overrides these methods in its adapter); :func:`bind_decode_parts` also binds its
methods to an adapter object that does not inherit it (a third-party adapter).
"""

from __future__ import annotations

from types import MethodType
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter, PositionEmbeddings


def _fuse_rows(linears: list[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate the linears' weights (and biases) by output rows, and make each linear's weight a
    view into the result: one matmul then serves all of them, with no second copy of the weights."""
    weight = torch.cat([lin.weight.data for lin in linears], dim=0)
    has_bias = all(lin.bias is not None for lin in linears)
    bias = torch.cat([lin.bias.data for lin in linears], dim=0) if has_bias else None
    start = 0
    for lin in linears:
        rows = lin.weight.shape[0]
        lin.weight.data = weight[start : start + rows]
        if has_bias:
            lin.bias.data = bias[start : start + rows]
        start += rows
    return weight, bias


def fuse_projections(adapter: Any) -> bool:
    """Fuse each layer's q/k/v and gate/up projections in place (idempotent); False where not possible.

    A batch-1 decode step is a chain of matrix-vector products, each with a fixed launch cost: fusing
    q/k/v into one and gate/up into one removes three of seven per layer. The model's own modules keep
    working unchanged (their weights become views of the fused tensors). Tensor-parallel (DTensor)
    weights are left alone.
    """
    if getattr(adapter, "_fused", None) is not None:
        return bool(adapter._fused)
    fused: list[tuple[Any, ...]] = []
    for block in adapter.layers:
        attn, mlp = block.self_attn, block.mlp
        qkv = [attn.q_proj, attn.k_proj, attn.v_proj]
        gate_up = [getattr(mlp, "gate_proj", None), getattr(mlp, "up_proj", None)]
        linears = qkv + gate_up
        if any(lin is None or type(lin.weight.data) is not torch.Tensor for lin in linears) or \
                (gate_up[0].bias is None) != (gate_up[1].bias is None):
            adapter._fused = []
            return False
        w_qkv, b_qkv = _fuse_rows(qkv)
        w_gu, b_gu = _fuse_rows(gate_up)
        sizes = tuple(lin.weight.shape[0] for lin in qkv)
        fused.append((w_qkv, b_qkv, sizes, w_gu, b_gu))
    adapter._fused = fused
    return True


class DecodeParts:
    """Attention pieces of one decoder layer, for callers that run the attention kernel themselves."""

    layers: Any
    _rope: Any
    _fused: list[tuple[Any, ...]] | None = None

    def decode_qkv(
        self, layer: int, hidden: torch.Tensor, position_embeddings: PositionEmbeddings
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, v)`` of ``hidden``'s tokens at ``layer``: ``[b, q_heads, n, d]`` and ``[b, kv_heads, n, d]``,
        after the input norm, projections, any q/k norm and RoPE (what the attention module feeds its kernel)."""
        block = self.layers[layer]
        attn = block.self_attn
        x = block.input_layernorm(hidden)
        shape = (*x.shape[:-1], -1, attn.head_dim)
        fused = getattr(self, "_fused", None)
        if fused:
            w, b, sizes, _, _ = fused[layer]
            q, k, v = (t.reshape(shape) for t in torch.nn.functional.linear(x, w, b).split(sizes, dim=-1))
        else:
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

    def decode_mlp(self, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden + mlp(post_attention_layernorm(hidden))``, with gate and up in one matmul once fused."""
        block = self.layers[layer]
        x = block.post_attention_layernorm(hidden)
        fused = getattr(self, "_fused", None)
        if not fused:
            return hidden + block.mlp(x)
        _, _, _, w, b = fused[layer]
        gate, up = torch.nn.functional.linear(x, w, b).chunk(2, dim=-1)
        return hidden + block.mlp.down_proj(block.mlp.act_fn(gate) * up)

    def attention_scale(self, layer: int) -> float:
        return float(self.layers[layer].self_attn.scaling)

    def attention_output(self, layer: int, hidden: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        """``hidden + o_proj(attn_out)``, ``attn_out`` being ``[b, n, q_heads * d]``."""
        return hidden + self.layers[layer].self_attn.o_proj(attn_out)


class BoundDecodeParts(NamedTuple):
    qkv: Any
    scale: Any
    output: Any
    mlp: Any


def bind_decode_parts(adapter: ModelAdapter) -> BoundDecodeParts:
    """The adapter's own methods if it is a :class:`DecodeParts`, else the mixin's bound to it."""
    if isinstance(adapter, DecodeParts):
        return BoundDecodeParts(adapter.decode_qkv, adapter.attention_scale, adapter.attention_output,
                                adapter.decode_mlp)
    return BoundDecodeParts(
        MethodType(DecodeParts.decode_qkv, adapter),
        MethodType(DecodeParts.attention_scale, adapter),
        MethodType(DecodeParts.attention_output, adapter),
        MethodType(DecodeParts.decode_mlp, adapter),
    )
