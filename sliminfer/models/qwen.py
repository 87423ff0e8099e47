"""Qwen2/Qwen2.5 (q/k/v biases, handled by the model's own projections) and Qwen3 (q/k RMS norms).

Sliding-window layers are refused by the base adapter's check: pruning changes which tokens a window
would cover, and Qwen2.5's released checkpoints do not enable them.
"""

from __future__ import annotations

from sliminfer.models.base import ModelAdapter


class Qwen2Adapter(ModelAdapter):
    """Qwen2 / Qwen2.5 decoder."""

    model_types = ("qwen2",)


class Qwen3Adapter(ModelAdapter):
    """Qwen3 decoder: queries and keys pass per-head RMS norms before RoPE (DecodeParts.decode_qkv)."""

    model_types = ("qwen3",)
