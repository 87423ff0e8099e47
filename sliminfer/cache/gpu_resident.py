"""Every layer's KV stays on the model's device, in buffers preallocated for the whole generation.

Preallocating prompt + ``reserve_tokens`` slots per layer means decoding writes one slot in place
instead of concatenating (which copies the whole cache at every step), and keeps the buffers' shapes
fixed for graph capture.
"""

from __future__ import annotations

from typing import Any

import torch

from sliminfer.cache.base import KVCacheManager


class GPUResidentCache(KVCacheManager):
    """Each layer keeps the KV of the tokens it holds on the model's device (the default)."""

    def setup(self, num_layers: int, reserve_tokens: int) -> None:
        super().setup(num_layers, reserve_tokens)
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers
        self._offered: tuple[list[torch.Tensor], list[torch.Tensor], int] | None = None

    def offer_static_buffers(self, keys: list[torch.Tensor], values: list[torch.Tensor], spare: int) -> None:
        """Taken: a layer's first buffer is the offered one where the prompt fits it (same dtype, device, heads)."""
        self._offered = (keys, values, spare)

    def _take_offered(self, layer_idx: int, like: torch.Tensor, needed: int) -> bool:
        if self._offered is None or self.keys[layer_idx] is not None:
            return False
        keys, values, spare = self._offered
        k = keys[layer_idx]
        if needed + spare > k.shape[2] or like.dtype != k.dtype or like.device != k.device or like.shape[1] != k.shape[1]:
            return False
        self.keys[layer_idx], self.values[layer_idx] = k, values[layer_idx]
        return True

    def _grow(self, layer_idx: int, like: torch.Tensor, needed: int) -> None:
        if self._take_offered(layer_idx, like, needed):
            return
        old_k, old_v, length = self.keys[layer_idx], self.values[layer_idx], self.lengths[layer_idx]
        capacity = needed + self.reserve_tokens if old_k is None else max(needed, 2 * old_k.shape[2])
        shape = (like.shape[0], like.shape[1], capacity, like.shape[3])
        new_k = like.new_empty(shape)
        new_v = like.new_empty(shape)
        if old_k is not None and length:
            new_k[:, :, :length] = old_k[:, :, :length]
            new_v[:, :, :length] = old_v[:, :, :length]
        self.keys[layer_idx], self.values[layer_idx] = new_k, new_v

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.lengths[layer_idx]
        end = start + key_states.shape[2]
        buf = self.keys[layer_idx]
        if buf is None or end > buf.shape[2]:
            self._grow(layer_idx, key_states, end)
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k[:, :, start:end] = key_states
        v[:, :, start:end] = value_states
        self.lengths[layer_idx] = end
        return k[:, :, :end], v[:, :, :end]

    def layer_keys(self, layer_idx: int) -> torch.Tensor:
        return self.keys[layer_idx][:, :, : self.lengths[layer_idx]]

    def layer_values(self, layer_idx: int) -> torch.Tensor:
        return self.values[layer_idx][:, :, : self.lengths[layer_idx]]

    def layer_tokens(self, layer_idx: int) -> int:
        return self.lengths[layer_idx]

    def layer_kv_bytes(self, layer_idx: int) -> int:
        k = self.keys[layer_idx]
        if k is None:
            return 0
        per_token = k.shape[0] * k.shape[1] * k.shape[3] * k.element_size()
        return 2 * per_token * self.lengths[layer_idx]
