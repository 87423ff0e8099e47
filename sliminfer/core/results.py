"""What a prefill and a generation return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from sliminfer.cache.base import KVCacheManager

if TYPE_CHECKING:
    from sliminfer.decode.static import StaticDecoder


@dataclass(frozen=True)
class PromptSelection:
    """What a prompt filter (GemFilter) kept: the prefill proper ran on these tokens only.

    Attributes:
        layer: the layer whose queries and keys chose them.
        prompt_tokens: tokens of the whole prompt.
        kept: the kept tokens' positions in the prompt, ascending, ``[m]``; the second pass encoded them
            as positions ``0 .. m - 1``.
    """

    layer: int
    prompt_tokens: int
    kept: torch.Tensor


@dataclass
class PrefillResult:
    """The outcome of one prefill.

    Attributes:
        logits: last prompt token's logits, ``[batch, vocab]``.
        cache: the KV cache manager holding every layer's KV, ready for decoding.
        kept_positions: for every layer, the ORIGINAL positions (places in the prompt) of the prompt tokens
            whose KV that layer holds, in order. After a prompt filter RoPE encoded them as ``0 .. m - 1``
            instead (see ``filtered``).
        ttft_s: seconds from the start of the prefill to the logits (device synchronised; a prompt
            filter's first pass included).
        kv_bytes_per_layer: bytes of prompt KV each layer holds.
        full_kv_bytes: what an unpruned, unfiltered prefill of the same prompt would hold.
        filtered: what a prompt filter kept, or None when the prefill ran on the whole prompt.
    """

    logits: torch.Tensor
    cache: KVCacheManager
    kept_positions: list[torch.Tensor]
    ttft_s: float
    kv_bytes_per_layer: list[int]
    full_kv_bytes: int
    filtered: PromptSelection | None = None

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt (the whole of it, also when a prompt filter ran on fewer)."""
        return self.filtered.prompt_tokens if self.filtered is not None else self.next_position

    @property
    def next_position(self) -> int:
        """The position the first generated token is fed at: the tokens the prefill ran at its first layer
        (the prompt's length, or after a prompt filter the kept tokens', whose positions were re-encoded)."""
        return int(self.kept_positions[0].numel())

    @property
    def tokens_per_layer(self) -> list[int]:
        return [int(p.numel()) for p in self.kept_positions]

    @property
    def kv_bytes(self) -> int:
        return sum(self.kv_bytes_per_layer)

    @property
    def kv_saved_fraction(self) -> float:
        return 1.0 - self.kv_bytes / self.full_kv_bytes if self.full_kv_bytes else 0.0


@dataclass
class GenerationResult:
    """Generated tokens and text, with timings.

    ``ttft_s`` covers the prefill and the first token; ``decode_s_per_token`` is the mean time of the
    decode steps (tokens after the first; 0.0 when only one token was produced); ``setup_s`` is what
    the static decode spends between the two (the KV hand-over, and the graph capture when its decoder
    is new; 0.0 for the eager decode); ``total_s`` all of it. ``decoder`` is the static decoder (its
    buffers and graph, reusable for a later prompt that fits), None for the eager decode.
    """

    token_ids: list[int]
    text: str
    prompt_tokens: int
    ttft_s: float
    decode_s_per_token: float
    total_s: float
    prefill: PrefillResult = field(repr=False)
    stopped_by: str = "max_new_tokens"
    setup_s: float = 0.0
    decoder: StaticDecoder | None = field(default=None, repr=False)
