"""Observation-window attention: what SnapKV, FastKV, LazyLLM and GemFilter rank prompt tokens by.

Each of those methods asks the same question of a layer: how much softmax attention do the last few
prompt tokens (the "observation window": the question, the token that will produce the first output)
pay to each earlier token? :func:`window_attention` answers it from the queries and keys the attention
itself uses; :func:`pool_over_keys` is SnapKV's 1-D pooling, which lets a token score with its
neighbours so a phrase is kept or dropped as a whole instead of token by token. The scorers
(:mod:`~sliminfer.strategies.snapkv`, :mod:`~sliminfer.strategies.last_token`) and the GemFilter prompt
filter (:mod:`~sliminfer.strategies.gemfilter`) are these two functions plus how they combine heads.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Pooling = Literal["max", "avg"]


def window_attention(queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Softmax attention of the window queries over ``keys``, float32: ``[b, kv_heads, group, window, n]``.

    Args:
        queries: ``[b, q_heads, window, d]``, the queries of the last ``window`` tokens among the keys'
            tokens (for a window of one: of a token at or after the last key), after RoPE.
        keys: ``[b, kv_heads, n, d]``, after RoPE; query heads are grouped by KV head (GQA).

    Query ``j`` of the window sits at key position ``n - window + j`` and sees the keys up to it, as the
    causal attention does; scores are scaled by ``1/sqrt(d)``, the models' softmax scale.
    """
    batch, q_heads, window, head_dim = queries.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    q = queries.float().reshape(batch, kv_heads, q_heads // kv_heads, window, head_dim)
    logits = torch.einsum("bgrwd,bgkd->bgrwk", q, keys.float()) / math.sqrt(head_dim)
    if window > 1:
        key_pos = torch.arange(n, device=keys.device)
        query_pos = n - window + torch.arange(window, device=keys.device)
        logits = logits.masked_fill(key_pos[None, :] > query_pos[:, None], float("-inf"))
    return logits.softmax(dim=-1)


def pool_over_keys(scores: torch.Tensor, kernel_size: int, pooling: Pooling) -> torch.Tensor:
    """``scores`` ``[..., n]`` pooled over its last dimension with an odd ``kernel_size``, stride 1 and
    ``kernel_size // 2`` padding, so the length stays ``n`` (``torch.nn.functional.avg_pool1d`` /
    ``max_pool1d`` as SnapKV calls them: the average counts the zero padding, the max ignores it)."""
    if kernel_size == 1 or scores.shape[-1] == 0:
        return scores
    pool = F.max_pool1d if pooling == "max" else F.avg_pool1d
    flat = scores.reshape(-1, 1, scores.shape[-1])
    return pool(flat, kernel_size, stride=1, padding=kernel_size // 2).reshape(scores.shape)


def check_kernel_size(kernel_size: int) -> int:
    """A pooling kernel must be odd (a same-length output needs ``kernel_size // 2`` padding each side)."""
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd number (1: no pooling); got {kernel_size}")
    return kernel_size


__all__ = ["Pooling", "check_kernel_size", "pool_over_keys", "window_attention"]
