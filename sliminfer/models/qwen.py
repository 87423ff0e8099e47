"""Qwen2/Qwen2.5 (q/k/v biases, handled by the model's own projections) and Qwen3 (q/k RMS norms).

Sliding-window layers are refused by the base adapter's check: pruning changes which tokens a window
would cover, and Qwen2.5's released checkpoints do not enable them.
"""

from __future__ import annotations

from typing import Any

import torch

from sliminfer.models.base import ModelAdapter


class Qwen2Adapter(ModelAdapter):
    """Qwen2 / Qwen2.5 decoder."""

    model_types = ("qwen2",)


class Qwen3Adapter(ModelAdapter):
    """Qwen3 decoder: queries pass the per-head q_norm before RoPE."""

    model_types = ("qwen3",)

    def _project_queries(self, attn: Any, x: torch.Tensor) -> torch.Tensor:
        return attn.q_norm(attn.q_proj(x).view(*x.shape[:-1], -1, attn.head_dim)).transpose(1, 2)
