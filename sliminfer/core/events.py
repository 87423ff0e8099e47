"""What observers (loggers, profilers) receive at the pipeline's hook points.

Plain frozen dataclasses: cheap to build, and plugins can rely on their fields without importing
anything from transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrefillStart:
    """A prefill is about to run ``prompt_tokens`` tokens through ``num_layers`` layers."""

    prompt_tokens: int
    num_layers: int
    pruning: bool


@dataclass(frozen=True)
class PruneDecision:
    """After ``layer`` the pipeline kept ``kept_positions`` (original positions) of ``tokens_before``."""

    layer: int
    budget: int
    tokens_before: int
    kept_positions: torch.Tensor
    block_scores: torch.Tensor


@dataclass(frozen=True)
class PrefillEnd:
    """A prefill finished: tokens each layer holds, KV bytes, seconds to the first token."""

    tokens_per_layer: tuple[int, ...]
    kv_bytes: int
    ttft_s: float


@dataclass(frozen=True)
class DecodeStep:
    """One generated token (``step`` counts from 0, the token produced by the prefill)."""

    step: int
    token_id: int
    position: int
