"""The ``offload`` KV cache manager (the design is in the package docstring, :mod:`sliminfer.cache.offload`)."""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

import torch

from sliminfer.cache.base import KVCacheManager
from sliminfer.cache.offload.config import OffloadConfig
from sliminfer.cache.offload.host_alias import device_alias
from sliminfer.cache.offload.selection import apply_swaps, choose_blocks
from sliminfer.cache.offload.state import LayerKV, SelectGroup
from sliminfer.cache.offload.static_decode import OffloadStaticRun
from sliminfer.cache.offload.stats import gpu_kv_bytes, manager_stats
from sliminfer.cache.offload.transfers import block_bytes, copy_to_slots, store_blocks
from sliminfer.core.errors import InputError
from sliminfer.strategies.attention_unit import AttentionUnitScorer
from sliminfer.strategies.token_unit import (
    TokenUnitConfig,
    TokenUnitScorer,
    unit_mean_keys,
)


class OffloadingKVManager(KVCacheManager):
    """Resident prompt KV in pinned CPU memory; per-layer active blocks on the GPU, swapped with hysteresis."""

    Config = OffloadConfig
    config: OffloadConfig
    spans_devices: ClassVar[bool] = False  # its buffers and copy streams live on one device
    memory_saving: ClassVar[str | None] = (
        "use the offload KV cache manager (cache: {name: offload, decode_budget: 2048}), which keeps the prompt KV "
        "in CPU memory and only the active blocks on the GPU"
    )
    memory_advice: ClassVar[str | None] = (
        "lower cache.decode_budget (the offload manager already keeps the prompt KV in CPU memory; what remains on "
        "the GPU in prefill is mostly the activations, which grow with the prompt)"
    )

    def __init__(self, config: OffloadConfig) -> None:
        super().__init__(config)
        c = config
        # the token-unit scorer on unit mean keys with unit_size 1 == the scorer on the full keys; the
        # attention-unit one then spreads the softmax over units (an approximation of per-token mass)
        scorer = TokenUnitScorer if c.selection == "token_unit" else AttentionUnitScorer
        self.unit_scorer = scorer(
            TokenUnitConfig(block_size=c.block_size // c.unit_size, unit_size=1, window=c.recent_window)
        )

    # lifecycle ------------------------------------------------------------------------------------
    def setup(self, num_layers: int, reserve_tokens: int) -> None:
        super().setup(num_layers, reserve_tokens)
        self.layers: list[LayerKV | None] = [None] * num_layers
        self.groups: list[SelectGroup] = []
        self.device: torch.device | None = None
        self.cuda = False
        self._prefill_kv: tuple[int, torch.Tensor, torch.Tensor] | None = None
        self._d2h: Any = None
        self._h2d: Any = None
        self._step_start: Any = None
        self._in_step = False
        self.step = -1
        self.prefill_d2h_bytes = 0
        self.bytes_moved: list[int] = []
        self.swaps: list[int] = []
        self.blocks_swapped: list[int] = []
        self.overlaps: list[list[float]] = []
        self._query_layers: frozenset[int] = frozenset()
        self.token_bytes = 0

    def _init_device(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._d2h = torch.cuda.Stream(device)
            self._h2d = torch.cuda.Stream(device)

    # the query hook (StagedForward.decode_step) -----------------------------------------------------
    @property
    def wants_queries(self) -> bool:
        """True when some layer chooses its active blocks by score."""
        return bool(self._query_layers)

    @property
    def query_layers(self) -> frozenset[int]:
        return self._query_layers

    def observe_query(self, layer_idx: int, query: torch.Tensor) -> None:
        if not self._in_step:
            self._begin_step()
        st = self.layers[layer_idx]
        if st is None or not st.selecting:
            return
        st.queries.append(query)
        group = self.groups[st.group]
        if group.pending and group.due <= self.step:
            self.apply_group(group)
        if not st.loaded:  # first decode step: choose this layer's first active set from this query
            chosen = choose_blocks(self.unit_scorer, query, group.unit_keys[st.row : st.row + 1],
                                   self.config.sink_blocks, st.slots)
            self._activate(st, chosen[0].tolist())  # the one host sync (step 0 only)
        if layer_idx == group.layers[-1]:
            self._select_next(group)

    @property
    def prefill_chunk_tokens(self) -> int | None:
        return self.config.prefill_chunk

    def static_run(self) -> OffloadStaticRun:
        """Prefill, ``recent_window`` eager steps here, then :class:`OffloadStaticDecoder` (its own buffers)."""
        return OffloadStaticRun(self)

    # the Cache interface -------------------------------------------------------------------------
    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        st = self.layers[layer_idx]
        if st is None:
            return self._store_prompt(layer_idx, key_states, value_states)
        if not self._in_step:
            self._begin_step()
        if st.selecting:
            group = self.groups[st.group]
            if group.pending and group.due <= self.step:
                self.apply_group(group)
        if not st.loaded:  # a selecting layer whose queries nobody passed: sink + most recent blocks
            self._activate(st, self._recency_selection(st))
        if st.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(st.ready)
            st.ready = None
        start = st.used(self.config.block_size)
        end = start + key_states.shape[2]
        if end > st.buf.shape[3]:
            self._grow(st, end)
        keys, values = st.buf[0], st.buf[1]  # each [1, kv_heads, capacity, d], contiguous
        keys[:, :, start:end] = key_states
        values[:, :, start:end] = value_states
        st.generated += key_states.shape[2]
        if layer_idx == self.num_layers - 1:
            self._in_step = False
        return keys[:, :, :end], values[:, :, :end]

    def layer_keys(self, layer_idx: int) -> torch.Tensor:
        """The layer's keys in original order on the model's device: resident prompt keys, then generated
        ones. During prefill the layer just run is returned as is; otherwise this materialises the
        host copy (for inspection and tests; the decode never calls it)."""
        return self._layer_kv(layer_idx, 0)

    def layer_values(self, layer_idx: int) -> torch.Tensor:
        """The values, as :meth:`layer_keys`."""
        return self._layer_kv(layer_idx, 1)

    def _layer_kv(self, layer_idx: int, which: int) -> torch.Tensor:
        if self._prefill_kv is not None and self._prefill_kv[0] == layer_idx:
            return self._prefill_kv[1 + which]
        st = self.layers[layer_idx]
        if self.cuda:
            self._d2h.synchronize()
        parts = []
        if st.n_blocks:
            _, _, heads, _, d = st.host.shape
            parts.append(st.host[:, which].transpose(0, 1).reshape(1, heads, -1, d).to(self.device))
        if st.tail is not None:  # before decode
            parts.append(st.tail[which])
        else:  # the tail and the generated tokens sit after the active blocks in the device buffer
            start = st.slots * self.config.block_size
            parts.append(st.buf[which][:, :, start : start + st.n_tail + st.generated])
        return torch.cat(parts, dim=2)

    def layer_tokens(self, layer_idx: int) -> int:
        st = self.layers[layer_idx]
        return 0 if st is None else st.resident + st.generated

    def layer_kv_bytes(self, layer_idx: int) -> int:
        """Bytes of the KV the layer holds, wherever it lives (resident prompt on the host, generated on the GPU)."""
        return self.layer_tokens(layer_idx) * self.token_bytes

    # prefill ---------------------------------------------------------------------------------------
    def _plan(self, n_blocks: int, tail: int) -> tuple[int, bool]:
        """(active blocks at decode, whether they are chosen by score)."""
        c = self.config
        if c.decode_budget is None:
            return n_blocks, False
        keep = max(c.sink_blocks + 1, (c.decode_budget - tail) // c.block_size)
        if keep >= n_blocks:
            return n_blocks, False
        return keep, keep - c.sink_blocks - 1 > 0

    def _store_prompt(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if k.shape[0] != 1:
            raise InputError(f"offload cache: batch size {k.shape[0]}; it holds one prompt at a time")
        if self.device is None:
            self._init_device(k.device)
            self.token_bytes = 2 * k.shape[1] * k.shape[3] * k.element_size()
        c = self.config
        bs = c.block_size
        _, heads, n, d = k.shape
        n_blocks, n_tail = divmod(n, bs)
        slots, selecting = self._plan(n_blocks, n_tail)
        st = LayerKV(resident=n, n_blocks=n_blocks, n_tail=n_tail, slots=slots, selecting=selecting,
                     queries=deque(maxlen=c.recent_window))
        if n_blocks:
            store_blocks(st, k, v, bs, self._d2h, c.pin_memory and self.cuda)
            # the decode gathers the chosen blocks straight from here, one kernel per layer (on the CPU the
            # host memory is the device's)
            st.alias = device_alias(st.host, k.device) if self.cuda else st.host
            self.prefill_d2h_bytes += n_blocks * block_bytes(heads, bs, d, k.element_size())
        st.tail = torch.stack((k[:, :, n_blocks * bs :], v[:, :, n_blocks * bs :]))
        if selecting:
            st.unit_keys = unit_mean_keys(k[:, :, : n_blocks * bs], c.unit_size)  # exactly the scorer's
            last = self.groups[-1] if self.groups else None
            joins = last is not None and last.layers[-1] == layer_idx - 1
            if joins and (last.n_blocks, last.slots) == (n_blocks, slots):
                last.layers.append(layer_idx)
            else:
                self.groups.append(SelectGroup(layers=[layer_idx], n_blocks=n_blocks, slots=slots))
            st.group, st.row = len(self.groups) - 1, len(self.groups[-1].layers) - 1
            self._query_layers = self._query_layers | {layer_idx}
        self.layers[layer_idx] = st
        self._prefill_kv = (layer_idx, k, v)  # for the pruning stage's layer_keys(); replaced by the next layer
        return k, v

    # decode ------------------------------------------------------------------------------------------
    def _begin_step(self) -> None:
        self._in_step = True
        self.step += 1
        self.bytes_moved.append(0)
        self.swaps.append(0)
        self.blocks_swapped.append(0)
        self.overlaps.append([])
        if self.step == 0:
            self._start_decode()
        if self.cuda:  # copies into the device buffers wait for everything enqueued so far (this event)
            self._step_start = torch.cuda.Event()
            self._step_start.record(torch.cuda.current_stream(self.device))
        if self.step == 0:
            for st in self.layers:
                if not st.selecting:  # all blocks, or (no room to choose) the forced ones
                    self._activate(st, self._recency_selection(st))
            return
        for group in self.groups:  # apply the previous step's selections whose read-back is in
            if group.pending and group.due <= self.step and (not self.cuda or group.event.query()):
                self.apply_group(group)

    def _start_decode(self) -> None:
        """Stack the groups' unit keys, allocate the device buffers, place the tails."""
        self._prefill_kv = None
        if self.cuda:
            self._h2d.wait_stream(self._d2h)  # the prompt KV is on the host before anything reads it back
        for group in self.groups:
            group.unit_keys = torch.cat([self.layers[i].unit_keys for i in group.layers])
            for i in group.layers:
                self.layers[i].unit_keys = None
            pin = self.cuda and self.config.pin_memory
            group.readback = torch.empty((len(group.layers), group.slots), dtype=torch.long, pin_memory=pin)
        bs = self.config.block_size
        for st in self.layers:
            _, _, heads, _, d = st.tail.shape
            capacity = st.slots * bs + st.n_tail + self.reserve_tokens
            st.buf = st.tail.new_empty((2, 1, heads, capacity, d))
            if self.cuda:
                st.buf.record_stream(self._h2d)
            st.buf[:, :, :, st.slots * bs : st.slots * bs + st.n_tail] = st.tail
            st.tail = None

    def _recency_selection(self, st: LayerKV) -> list[int]:
        """Without queries: the sink blocks and the most recent blocks."""
        sink = min(self.config.sink_blocks, st.slots)
        return sorted(set(range(sink)) | set(range(st.n_blocks - (st.slots - sink), st.n_blocks)))

    def _activate(self, st: LayerKV, blocks: list[int]) -> None:
        """First active set of a layer: blocks in ascending order into slots 0.. (original order)."""
        st.place(blocks)
        self._copy_blocks([(st, list(range(len(blocks))), list(blocks))])

    def _select_next(self, group: SelectGroup) -> None:
        """Score the group's layers from their recent queries; the result applies at the next step."""
        first = self.layers[group.layers[0]]
        window = len(first.queries)
        q = torch.cat([qq for i in group.layers for qq in self.layers[i].queries], dim=2)[0]
        heads, _, d = q.shape
        queries = q.view(heads, len(group.layers), window, d).transpose(0, 1)  # [layers, q_heads, window, d]
        chosen = choose_blocks(self.unit_scorer, queries, group.unit_keys, self.config.sink_blocks, group.slots)
        if self.cuda:
            group.readback.copy_(chosen, non_blocking=True)
            group.event = torch.cuda.Event()
            group.event.record(torch.cuda.current_stream(self.device))
        else:
            group.readback = chosen
        group.pending = True
        group.due = self.step + 1

    def apply_group(self, group: SelectGroup) -> None:
        """Apply the read-back selection of the previous step to every layer of the group (the static
        decoder calls this once at the hand-over)."""
        if self.cuda and not group.event.query():
            group.event.synchronize()  # only when the GPU is a whole step behind the host
        group.pending = False
        states = [self.layers[i] for i in group.layers]
        slot_block = torch.tensor([st.slot_block for st in states], dtype=torch.long)
        swaps = apply_swaps(group.readback, slot_block, self.config.gamma, group.n_blocks)
        self.overlaps[-1].extend(swaps.overlap.tolist())
        moves = []
        for row, (st, n) in enumerate(zip(states, swaps.moves.tolist())):
            if not n:
                continue
            incoming, slots = swaps.incoming[row, :n].tolist(), swaps.slots[row, :n].tolist()
            st.slot_block = slot_block[row].tolist()
            st.block_slot = {b: s for s, b in enumerate(st.slot_block)}
            moves.append((st, slots, incoming))
            self.swaps[-1] += 1
            self.blocks_swapped[-1] += n
        self._copy_blocks(moves)  # the group's layers together: one index upload, one event

    def _copy_blocks(self, moves: list[tuple[LayerKV, list[int], list[int]]]) -> None:
        self.bytes_moved[-1] += copy_to_slots(moves, self.config.block_size, self._h2d, self._step_start,
                                              self.device, self.config.pin_memory)

    def _grow(self, st: LayerKV, needed: int) -> None:
        """A larger generated-token region (same rule as the GPU-resident cache: at least double)."""
        old = st.buf
        new = old.new_empty((*old.shape[:3], max(needed, 2 * old.shape[3]), old.shape[4]))
        used = st.used(self.config.block_size)
        new[:, :, :, :used] = old[:, :, :, :used]
        if self.cuda:
            new.record_stream(self._h2d)
        st.buf = new

    # counters ----------------------------------------------------------------------------------------
    def gpu_kv_bytes(self) -> dict[str, int]:
        """Bytes on the model's device: active prompt KV (tails included), generated KV, score keys,
        and the buffers' capacity."""
        return gpu_kv_bytes(self)

    def stats(self) -> dict[str, Any]:
        """Counters: per decode step the bytes copied to the device (step 0: the initial load), the layers
        that swapped, the blocks swapped in and the mean overlap of the applied selections with the
        active sets; and the KV bytes on the GPU and on the host now."""
        return manager_stats(self)
