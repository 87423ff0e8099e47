"""The offload manager's per-layer and per-group state, shared with its static decoder."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LayerKV:
    """One layer's prompt KV: resident blocks on the host, active ones in a device buffer."""

    resident: int  # prompt tokens whose KV the layer holds
    n_blocks: int  # full blocks among them
    n_tail: int  # tokens after the last full block (always active)
    slots: int  # prompt blocks active on the device at decode
    selecting: bool  # the active set is chosen by score (else: all blocks, or the forced ones only)
    host: torch.Tensor | None = None  # [n_blocks, 2 (K, V), kv_heads, block, d], (pinned) CPU memory
    alias: torch.Tensor | None = None  # the same pinned memory seen from the GPU (host_alias), or None
    tail: torch.Tensor | None = None  # [2, 1, kv_heads, tail, d] on the device until decode
    unit_keys: torch.Tensor | None = None  # [1, kv_heads, units, d] float32, until stacked per group
    buf: torch.Tensor | None = None  # [2, 1, kv_heads, slots * block + tail + generated capacity, d]
    loaded: bool = False  # the first active set is placed (decode)
    slot_block: list[int] = field(default_factory=list)
    block_slot: dict[int, int] = field(default_factory=dict)
    generated: int = 0
    ready: Any = None  # CUDA event: this layer's pending copies are done
    queries: deque = field(default_factory=deque)
    group: int = -1
    row: int = 0

    def used(self, block_size: int) -> int:
        """Rows of the device buffer in use: active slots, tail, generated tokens."""
        return self.slots * block_size + self.n_tail + self.generated

    def place(self, blocks: list[int]) -> None:
        """Record that ``blocks`` (ascending) fill slots ``0 ..`` (a layer's first active set)."""
        self.loaded = True
        self.slot_block = list(blocks)
        self.block_slot = {b: s for s, b in enumerate(blocks)}


@dataclass
class SelectGroup:
    """Consecutive selecting layers with the same block count, scored in one batched call."""

    layers: list[int]
    n_blocks: int
    slots: int  # active blocks per layer (forced ones included)
    unit_keys: torch.Tensor | None = None  # [layers, kv_heads, units, d] float32
    readback: torch.Tensor | None = None  # [layers, slots] the selected blocks, on the host
    event: Any = None
    pending: bool = False
    due: int = 0  # the decode step the read-back selection applies to
