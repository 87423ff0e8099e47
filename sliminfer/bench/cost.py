"""What a run must cost at least: prefill FLOPs from the per-layer token counts, and the decode
bandwidth floor (bytes read per token over the memory bandwidth).

Printed beside measured times, these tell a speed change apart from a change in the work done, and
show how far a decode is from the memory-bound limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sliminfer.models.base import ModelAdapter

H100_SXM_BANDWIDTH = 3.35e12  # bytes/s, HBM3 peak of the H100 SXM
H200_BANDWIDTH = 4.8e12  # bytes/s, HBM3e peak of the H200
DEVICE_COPY_BANDWIDTH = 4.3e12  # bytes/s a device-to-device copy reaches on an H200 (measured, gpu.md)


@dataclass(frozen=True)
class ModelCost:
    """The dimensions that decide a decoder's FLOPs and bytes."""

    num_layers: int
    hidden: int
    q_heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype_bytes: int
    weight_bytes: int  # read once per decoded token: every parameter but the input embedding table

    @classmethod
    def of(cls, adapter: ModelAdapter) -> ModelCost:
        """The shape of the model behind ``adapter`` (which alone knows the module layout)."""
        config = adapter.config
        return cls(
            num_layers=adapter.num_layers,
            hidden=int(config.hidden_size),
            q_heads=int(config.num_attention_heads),
            kv_heads=int(config.num_key_value_heads),
            head_dim=adapter.head_dim,
            intermediate=int(config.intermediate_size),
            vocab=adapter.vocab_size,
            dtype_bytes=next(adapter.model.parameters()).element_size(),
            weight_bytes=adapter.decode_weight_bytes(),
        )

    @property
    def kv_bytes_per_token_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * self.dtype_bytes

    def layer_matmul_flops(self, attn_tokens: int, mlp_tokens: int) -> float:
        """Projections (q, k, v, o) on ``attn_tokens`` and the gated MLP on ``mlp_tokens``."""
        q_width, kv_width = self.q_heads * self.head_dim, self.kv_heads * self.head_dim
        projections = self.hidden * (2 * q_width + 2 * kv_width)
        mlp = 3 * self.hidden * self.intermediate
        return 2.0 * (projections * attn_tokens + mlp * mlp_tokens)

    def attention_flops(self, tokens: int) -> float:
        """Causal self-attention over ``tokens``: QK^T and PV, 4 t^2 d_attn, halved by the mask."""
        return 4.0 * tokens * tokens * self.q_heads * self.head_dim / 2

    def prefill_flops(self, tokens_per_layer: Sequence[int], prune_after_attention: bool = True) -> float:
        """FLOPs of a prefill whose layer ``i`` attends over ``tokens_per_layer[i]`` tokens.

        With the paper's prune point (after the attention) a pruning layer's MLP already runs on the
        survivors, i.e. on the next layer's token count; the LM head runs on the last token only.
        """
        total = 2.0 * self.hidden * self.vocab
        n = len(tokens_per_layer)
        for i, t in enumerate(tokens_per_layer):
            mlp_tokens = tokens_per_layer[i + 1] if prune_after_attention and i + 1 < n else t
            total += self.layer_matmul_flops(t, mlp_tokens) + self.attention_flops(t)
        return total

    def decode_flops(self, prompt_tokens_per_layer: Sequence[int], steps: int) -> float:
        """FLOPs of ``steps`` decode steps: step ``s`` attends over a layer's prompt tokens, the ``s``
        earlier generated tokens and itself; the LM head runs once per step."""
        total = 0.0
        for step in range(steps):
            total += 2.0 * self.hidden * self.vocab + sum(
                self.layer_matmul_flops(1, 1) + 4.0 * (t + step + 1) * self.q_heads * self.head_dim
                for t in prompt_tokens_per_layer
            )
        return total

    def decode_bytes_per_token(self, prompt_tokens_per_layer: Sequence[int], new_tokens: int) -> float:
        """Bytes one decode step reads at least: the weights, plus each layer's KV at the middle of the
        generation (its prompt tokens plus half the new ones)."""
        kv_tokens = sum(t + new_tokens / 2 for t in prompt_tokens_per_layer)
        return self.weight_bytes + kv_tokens * self.kv_bytes_per_token_layer

    def decode_floor_s(self, prompt_tokens_per_layer: Sequence[int], new_tokens: int,
                       bandwidth: float = H100_SXM_BANDWIDTH) -> float:
        return self.decode_bytes_per_token(prompt_tokens_per_layer, new_tokens) / bandwidth
