"""Offloading KV cache manager: resident prompt KV in (pinned) CPU memory, active blocks on the GPU.

The paper's second component (method.md, "Decode, and the asynchronous KV cache manager"):

- Prefill: as each layer's attention finishes, its prompt KV (the layer's RESIDENT set: all prompt
  tokens for preserve layers, the survivors for slim layers) is copied to CPU memory on a side CUDA
  stream (``non_blocking`` into pinned buffers); the GPU copy is released as soon as that copy is done
  (``record_stream``), so peak GPU memory never holds the whole prompt KV. Only small per-layer
  extras stay on the GPU: the partial tail after the last full block and, for layers that select at
  decode, the token units' mean keys (float32, 1/``unit_size`` of the keys) used to score blocks.
- Decode: each layer attends to its ACTIVE prompt blocks plus every generated token (generated KV
  always stays on the GPU). A layer whose resident set fits ``decode_budget`` (or with
  ``decode_budget: null``) keeps all its blocks active. Otherwise the active set holds
  ``max(sink_blocks + 1, (decode_budget - tail) // block_size)`` blocks: the first ``sink_blocks``
  (attention sink) and the most recent full prompt block always, the rest chosen by the token-unit
  score (the :class:`~sliminfer.strategies.token_unit.TokenUnitScorer` itself, fed the unit mean keys
  with ``unit_size`` 1: exactly its score on the full keys) with the mean of the ``recent_window``
  most recent decode tokens' queries as the local query; the tail is always active too.
- Overlap-aware swapping: when the new selection overlaps the current active set (forced blocks
  included) by less than ``gamma``, the newly selected blocks are copied in (H2D on a side stream,
  into the slots of the blocks that left, which are thereby released); otherwise nothing moves.

Timing of the selection (an allowed design, see the issue): the selection computed from the queries
of decode steps ``<= t`` is applied at step ``t + 1``. Step 0 is the exception: each selecting
layer's first active set is chosen synchronously from the current (first) decode token's query,
before that layer's attention. So at step ``t >= 1`` a layer's local query is the mean of the queries
of steps ``max(0, t - recent_window) .. t - 1``.

Stream ordering (CUDA): the selection runs on the compute stream and its top-k block ids are copied
to a pinned host buffer with an event. The next step reads them back as early as possible without
blocking (``Event.query()`` at the step's start) and issues the copies then, so they overlap the
compute of the layers before; a group whose read-back is not complete yet is handled when its first
layer is reached (``Event.synchronize()``: only waits if the GPU is a whole step behind the host).
The copy stream waits (``wait_event``) for the previous step's compute before overwriting slots the
previous step read; the compute stream waits (``wait_event``) for a layer's copies before that
layer's attention. No host synchronisation happens in the steady state: the first decode step
synchronises once (initial selections), and a swap costs host work, never a wait. On the CPU the same
logic runs with plain copies (that is what CI checks).

Copies: the chosen blocks are gathered straight from pinned host memory by one kernel per layer
(:mod:`sliminfer.cache.host_alias`), instead of one copy per run of consecutive blocks; a group's
layers upload their block and slot ids together and share one event.

Static decode: ``generate(fast=True)`` (``fast_generate``) runs the first ``recent_window`` steps
here, then hands the state to :class:`~sliminfer.core.offload_decode.OffloadStaticDecoder`, which does
the same selection, slot assignment and copies on the device so that the step can be replayed as a
CUDA graph (equal to this manager's decode: tests/test_offload_decode.py).

Layers that select with the same number of blocks and consecutive indices form a group, scored
together in one batched scorer call (the paper's schedule gives three or four groups), which keeps
the per-step overhead to a few kernel launches per group.

Queries: the manager sets ``wants_queries`` (and ``query_layers``) once the prefill shows that some
layer selects; ``StagedForward.decode_step`` then runs those layers' attention through
``ModelAdapter.attention_block_observed``, which hands the queries (after any q norm and RoPE) to
:meth:`OffloadingKVManager.observe_query` before the cache update and the attention, projecting
them once. Other managers never see this path.

Layout: host blocks are ``[blocks, 2 (K, V), kv_heads, block, d]`` (one contiguous chunk per block,
so a run of consecutive blocks is one copy); each layer's device buffer is ``[2, 1, kv_heads,
capacity, d]``: the active blocks' slots, the tail, then the generated tokens, and K and V are its two
contiguous halves (the same shapes and strides as the GPU-resident cache's buffers). With every block
active the slots hold the blocks in order, so the attention sees exactly the GPU-resident cache's
tensors.
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Any

import torch
from pydantic import Field, ValidationInfo, field_validator

from sliminfer.cache.base import KVCacheManager
from sliminfer.cache.host_alias import device_alias
from sliminfer.core.config import ConfigModel
from sliminfer.core.errors import InputError
from sliminfer.strategies.attention_unit import AttentionUnitScorer
from sliminfer.strategies.token_unit import TokenUnitConfig, TokenUnitScorer


class OffloadConfig(ConfigModel):
    """Options of the ``offload`` cache manager (``cache: {name: offload, decode_budget: 2048}``)."""

    block_size: int = Field(64, ge=1, description="Tokens per block, the unit of activation and transfer.")
    unit_size: int = Field(8, ge=1, description="Tokens per token unit of the block score; must divide block_size.")
    sink_blocks: int = Field(1, ge=0, description="Leading prompt blocks always active (attention sink).")
    decode_budget: int | None = Field(
        None,
        description="Prompt tokens each layer keeps active (on the GPU) at decode, tail included; a multiple "
        "of block_size. null: every resident block is active.",
    )
    recent_window: int = Field(4, ge=1, description="Most recent decode tokens whose mean query is the local query.")
    selection: Literal["token_unit", "attention_unit"] = Field(
        "token_unit",
        description="Block score of the active-set choice: the paper's token_unit |q.k|, or attention_unit "
        "(softmax attention mass of the recent queries over the token units' mean keys).",
    )
    gamma: float = Field(0.9, ge=0.0, le=1.0, description="Swap only when the new selection overlaps the active "
                         "set by less than this fraction (1: follow every change, 0: never swap).")
    pin_memory: bool = Field(True, description="Page-locked CPU buffers (needed for asynchronous copies on CUDA).")

    @field_validator("unit_size")
    @classmethod
    def _unit_divides_block(cls, value: int, info: ValidationInfo) -> int:
        block = info.data.get("block_size")
        if block is not None and block % value:
            raise ValueError(f"must divide block_size ({block})")
        return value

    @field_validator("decode_budget")
    @classmethod
    def _budget_in_blocks(cls, value: int | None, info: ValidationInfo) -> int | None:
        block, sink = info.data.get("block_size"), info.data.get("sink_blocks")
        if value is None or block is None:
            return value
        if value % block:
            raise ValueError(f"must be a multiple of block_size ({block}), e.g. {max(1, round(value / block)) * block}")
        if sink is not None and value < (sink + 1) * block:
            raise ValueError(
                f"must be at least (sink_blocks + 1) * block_size = {(sink + 1) * block}: the sink blocks and the "
                "most recent prompt block are always active"
            )
        return value


@dataclass
class _Layer:
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


@dataclass
class _Group:
    """Consecutive selecting layers with the same block count, scored in one batched call."""

    layers: list[int]
    n_blocks: int
    picks: int  # blocks chosen by score per layer (active blocks minus the forced ones)
    unit_keys: torch.Tensor | None = None  # [layers, kv_heads, units, d] float32
    readback: torch.Tensor | None = None  # [layers, picks] top-k block ids (minus sink_blocks), host
    event: Any = None
    pending: bool = False
    due: int = 0  # the decode step the read-back selection applies to


class OffloadingKVManager(KVCacheManager):
    """Resident prompt KV in pinned CPU memory; per-layer active blocks on the GPU, swapped with hysteresis."""

    Config = OffloadConfig
    config: OffloadConfig

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
        self.layers: list[_Layer | None] = [None] * num_layers
        self.groups: list[_Group] = []
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
        self._token_bytes = 0

    def _init_device(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._d2h = torch.cuda.Stream(device)
            self._h2d = torch.cuda.Stream(device)

    def _on(self, stream: Any) -> Any:
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    # the query hook (StagedForward.decode_step) -----------------------------------------------------
    @property
    def wants_queries(self) -> bool:
        """True when some layer chooses its active blocks by score: decode then passes each such
        layer's queries through :meth:`observe_query` before the layer's attention."""
        return bool(self._query_layers)

    @property
    def query_layers(self) -> frozenset[int]:
        return self._query_layers

    def observe_query(self, layer_idx: int, query: torch.Tensor) -> None:
        """The current decode token's queries at ``layer_idx``, ``[1, q_heads, 1, d]`` as the attention
        sees them; called before the layer's attention (and before :meth:`update`)."""
        if not self._in_step:
            self._begin_step()
        st = self.layers[layer_idx]
        if st is None or not st.selecting:
            return
        st.queries.append(query)
        group = self.groups[st.group]
        if group.pending and group.due <= self.step:
            self._apply_group(group)
        if not st.loaded:  # first decode step: choose this layer's first active set from this query
            picks = self._pick(group, query, row=st.row).tolist()[0]  # the one host sync (step 0 only)
            self._activate(st, self._selection(st, picks))
        if layer_idx == group.layers[-1]:
            self._select_next(group)

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
                self._apply_group(group)
        if not st.loaded:  # a selecting layer whose queries nobody passed: sink + most recent blocks
            self._activate(st, self._recency_selection(st))
        if st.ready is not None:
            torch.cuda.current_stream(self.device).wait_event(st.ready)
            st.ready = None
        bs = self.config.block_size
        start = st.slots * bs + st.n_tail + st.generated
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
        if self._prefill_kv is not None and self._prefill_kv[0] == layer_idx:
            return self._prefill_kv[1]
        st = self.layers[layer_idx]
        if self.cuda:
            self._d2h.synchronize()
        parts = []
        if st.n_blocks:
            _, _, heads, _, d = st.host.shape
            parts.append(st.host[:, 0].transpose(0, 1).reshape(1, heads, -1, d).to(self.device))
        if st.tail is not None:  # before decode
            parts.append(st.tail[0])
        else:  # the tail and the generated tokens sit after the active blocks in the device buffer
            start = st.slots * self.config.block_size
            parts.append(st.buf[0][:, :, start : start + st.n_tail + st.generated])
        return torch.cat(parts, dim=2)

    def layer_tokens(self, layer_idx: int) -> int:
        st = self.layers[layer_idx]
        return 0 if st is None else st.resident + st.generated

    def layer_kv_bytes(self, layer_idx: int) -> int:
        """Bytes of the KV the layer holds, wherever it lives (resident prompt on the host, generated on the GPU)."""
        return self.layer_tokens(layer_idx) * self._token_bytes

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
            self._token_bytes = 2 * k.shape[1] * k.shape[3] * k.element_size()
        c = self.config
        bs = c.block_size
        _, heads, n, d = k.shape
        n_blocks, n_tail = divmod(n, bs)
        slots, selecting = self._plan(n_blocks, n_tail)
        st = _Layer(resident=n, n_blocks=n_blocks, n_tail=n_tail, slots=slots, selecting=selecting,
                    queries=deque(maxlen=c.recent_window))
        if n_blocks:
            pin = c.pin_memory and self.cuda
            st.host = torch.empty((n_blocks, 2, heads, bs, d), dtype=k.dtype, pin_memory=pin)
            src_k = k[0, :, : n_blocks * bs].view(heads, n_blocks, bs, d).transpose(0, 1)
            src_v = v[0, :, : n_blocks * bs].view(heads, n_blocks, bs, d).transpose(0, 1)
            if self.cuda:
                self._d2h.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self._d2h):  # block-major K/V on the device, then one copy out
                    st.host.copy_(torch.stack((src_k, src_v), dim=1), non_blocking=True)
                k.record_stream(self._d2h)  # the allocator may reuse them only after the copies
                v.record_stream(self._d2h)
            else:
                st.host[:, 0].copy_(src_k)
                st.host[:, 1].copy_(src_v)
            # the decode gathers the chosen blocks straight from here, one kernel per layer (on the CPU the
            # host memory is the device's)
            st.alias = device_alias(st.host, k.device) if self.cuda else st.host
            self.prefill_d2h_bytes += n_blocks * self._block_bytes(heads, d, k.element_size())
        st.tail = torch.stack((k[:, :, n_blocks * bs :], v[:, :, n_blocks * bs :]))
        if selecting:
            # the token units' mean keys, exactly as TokenUnitScorer forms them from the full keys
            units = n_blocks * bs // c.unit_size
            st.unit_keys = k[:, :, : n_blocks * bs].float().reshape(1, heads, units, c.unit_size, d).mean(dim=3)
            last = self.groups[-1] if self.groups else None
            picks = slots - c.sink_blocks - 1
            joins = last is not None and last.layers[-1] == layer_idx - 1
            if joins and (last.n_blocks, last.picks) == (n_blocks, picks):
                last.layers.append(layer_idx)
            else:
                self.groups.append(_Group(layers=[layer_idx], n_blocks=n_blocks, picks=picks))
            st.group, st.row = len(self.groups) - 1, len(self.groups[-1].layers) - 1
            self._query_layers = self._query_layers | {layer_idx}
        self.layers[layer_idx] = st
        self._prefill_kv = (layer_idx, k, v)  # for the pruning stage's layer_keys(); replaced by the next layer
        return k, v

    def _block_bytes(self, heads: int, d: int, element_size: int) -> int:
        return 2 * heads * self.config.block_size * d * element_size

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
                self._apply_group(group)

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
            group.readback = torch.empty((len(group.layers), group.picks), dtype=torch.long, pin_memory=pin)
        bs = self.config.block_size
        for st in self.layers:
            _, _, heads, _, d = st.tail.shape
            capacity = st.slots * bs + st.n_tail + self.reserve_tokens
            st.buf = st.tail.new_empty((2, 1, heads, capacity, d))
            if self.cuda:
                st.buf.record_stream(self._h2d)
            st.buf[:, :, :, st.slots * bs : st.slots * bs + st.n_tail] = st.tail
            st.tail = None

    def _forced(self, st: _Layer) -> list[int]:
        return [*range(self.config.sink_blocks), st.n_blocks - 1]

    def _selection(self, st: _Layer, picks: list[int]) -> list[int]:
        sink = self.config.sink_blocks
        return sorted(set(self._forced(st)) | {p + sink for p in picks})

    def _recency_selection(self, st: _Layer) -> list[int]:
        """Without queries: the sink blocks and the most recent blocks."""
        sink = min(self.config.sink_blocks, st.slots)
        return sorted(set(range(sink)) | set(range(st.n_blocks - (st.slots - sink), st.n_blocks)))

    def _activate(self, st: _Layer, blocks: list[int]) -> None:
        """First active set of a layer: blocks in ascending order into slots 0.. (original order)."""
        st.loaded = True
        st.slot_block = list(blocks)
        st.block_slot = {b: s for s, b in enumerate(blocks)}
        self._copy_blocks([(st, list(range(len(blocks))), list(blocks))])

    def _pick(self, group: _Group, queries: torch.Tensor, row: int | None = None) -> torch.Tensor:
        """Top-k block ids (minus ``sink_blocks``) among the middle blocks of the group's layers (or of
        its layer ``row``), from ``queries`` ``[rows, q_heads, window, d]``: ``[rows, picks]``."""
        keys = group.unit_keys if row is None else group.unit_keys[row : row + 1]
        scores = self.unit_scorer.score_blocks(queries, keys)
        middle = torch.nan_to_num(scores[:, self.config.sink_blocks : group.n_blocks - 1], nan=float("-inf"))
        return torch.topk(middle, group.picks, dim=-1, sorted=False).indices

    def _select_next(self, group: _Group) -> None:
        """Score the group's layers from their recent queries; the result applies at the next step."""
        first = self.layers[group.layers[0]]
        window = len(first.queries)
        q = torch.cat([qq for i in group.layers for qq in self.layers[i].queries], dim=2)[0]
        heads, _, d = q.shape
        queries = q.view(heads, len(group.layers), window, d).transpose(0, 1)  # [layers, q_heads, window, d]
        picks = self._pick(group, queries)
        if self.cuda:
            group.readback.copy_(picks, non_blocking=True)
            group.event = torch.cuda.Event()
            group.event.record(torch.cuda.current_stream(self.device))
        else:
            group.readback = picks
        group.pending = True
        group.due = self.step + 1

    def _apply_group(self, group: _Group) -> None:
        """Apply the read-back selection of the previous step to every layer of the group."""
        if self.cuda and not group.event.query():
            group.event.synchronize()  # only when the GPU is a whole step behind the host
        rows = group.readback.tolist()
        group.pending = False
        moves = []
        for layer_idx, picks in zip(group.layers, rows):
            st = self.layers[layer_idx]
            selected = self._selection(st, picks)
            active = st.block_slot
            overlap = sum(1 for b in selected if b in active) / st.slots
            self.overlaps[-1].append(overlap)
            if overlap >= self.config.gamma:
                continue
            chosen = set(selected)
            incoming = [b for b in selected if b not in active]
            outgoing = sorted(b for b in active if b not in chosen)
            slots = [active.pop(b) for b in outgoing]
            for b, s in zip(incoming, slots):
                active[b] = s
                st.slot_block[s] = b
            moves.append((st, slots, incoming))
            self.swaps[-1] += 1
            self.blocks_swapped[-1] += len(incoming)
        self._copy_blocks(moves)  # the group's layers together: one index upload, one event

    def _copy_blocks(self, moves: list[tuple[_Layer, list[int], list[int]]]) -> None:
        """For each ``(layer, slots, blocks)``: copy the host blocks into the layer's device slots (on the
        copy stream on CUDA). Host work is kept per call, not per layer: one upload of every layer's
        block and slot ids, then a gather (from the host alias) and a scatter per layer, one event."""
        moves = [(st, *zip(*sorted(zip(blocks, slots)))) for st, slots, blocks in moves if blocks]
        if not moves:
            return
        with self._on(self._h2d):
            if self.cuda:
                self._h2d.wait_event(self._step_start)  # the previous step is done reading these slots
            flat = [i for st, blocks, slots in moves if st.alias is not None for i in (*blocks, *slots)]
            ids = None
            if flat:
                ids = torch.tensor(flat, dtype=torch.long, pin_memory=self.cuda).to(self.device, non_blocking=True)
            offset = 0
            event = torch.cuda.Event() if self.cuda else None
            for st, blocks, slots in moves:
                n = len(blocks)
                if st.alias is not None:  # one gather kernel reads the chosen blocks from pinned host memory
                    block_ids, slot_ids = ids[offset : offset + n], ids[offset + n : offset + 2 * n]
                    offset += 2 * n
                    stage = st.alias.index_select(0, block_ids)
                else:
                    stage = self._stage_runs(st, list(blocks))
                    slot_ids = None
                self._place(st, list(slots), slot_ids, stage)
                st.ready = event
                self.bytes_moved[-1] += n * self._block_bytes(stage.shape[2], stage.shape[4], stage.element_size())
            if event is not None:
                event.record(self._h2d)

    def _place(self, st: _Layer, slots: list[int], slot_ids: torch.Tensor | None, stage: torch.Tensor) -> None:
        """Write ``stage`` ``[blocks, 2, kv_heads, block, d]`` into the layer's device slots ``slots``."""
        bs = self.config.block_size
        _, _, heads, _, d = st.buf.shape
        view = st.buf[:, :, :, : st.slots * bs].view(2, 1, heads, st.slots, bs, d)
        src = stage.permute(1, 2, 0, 3, 4).unsqueeze(1)  # [2, 1, kv_heads, blocks, block, d]
        if slots == list(range(st.slots)):
            view.copy_(src)
            return
        if slot_ids is None:
            index = torch.tensor(slots, dtype=torch.long, pin_memory=self.cuda and self.config.pin_memory)
            slot_ids = index.to(st.buf.device, non_blocking=True)
        view.index_copy_(3, slot_ids, src)

    def _stage_runs(self, st: _Layer, blocks: list[int]) -> torch.Tensor:
        """The blocks (ascending) on the device, one copy per run of consecutive blocks (CUDA where the
        host memory has no device alias: not pinned)."""
        _, _, heads, bs, d = st.host.shape
        stage = st.buf.new_empty((len(blocks), 2, heads, bs, d))
        start = 0
        while start < len(blocks):
            end = start + 1
            while end < len(blocks) and blocks[end] == blocks[end - 1] + 1:
                end += 1
            stage[start:end].copy_(st.host[blocks[start] : blocks[end - 1] + 1], non_blocking=True)
            start = end
        return stage

    def _grow(self, st: _Layer, needed: int) -> None:
        """A larger generated-token region (same rule as the GPU-resident cache: at least double)."""
        old = st.buf
        new = old.new_empty((*old.shape[:3], max(needed, 2 * old.shape[3]), old.shape[4]))
        used = st.slots * self.config.block_size + st.n_tail + st.generated
        new[:, :, :, :used] = old[:, :, :, :used]
        if self.cuda:
            new.record_stream(self._h2d)
        st.buf = new

    # counters ----------------------------------------------------------------------------------------
    def gpu_kv_bytes(self) -> dict[str, int]:
        """Bytes on the model's device: active prompt KV (tails included), generated KV, score keys,
        and the buffers' capacity."""
        prompt = generated = capacity = 0
        bs = self.config.block_size
        for st in self.layers:
            if st is None:
                continue
            if st.loaded:
                prompt += (st.slots * bs + st.n_tail) * self._token_bytes
                capacity += st.buf.numel() * st.buf.element_size()
            else:
                prompt += st.n_tail * self._token_bytes
            generated += st.generated * self._token_bytes
        score = sum(g.unit_keys.numel() * 4 for g in self.groups if g.unit_keys is not None)
        score += sum(st.unit_keys.numel() * 4 for st in self.layers if st is not None and st.unit_keys is not None)
        return {"prompt": prompt, "generated": generated, "score_keys": score, "buffer_capacity": capacity}

    def stats(self) -> dict[str, Any]:
        """Counters: per decode step the bytes copied to the device (step 0: the initial load), the layers
        that swapped, the blocks swapped in and the mean overlap of the applied selections with the
        active sets; and the KV bytes on the GPU and on the host now."""
        gpu = self.gpu_kv_bytes()
        host = sum(st.host.numel() * st.host.element_size() for st in self.layers
                   if st is not None and st.host is not None)
        overlap = [sum(o) / len(o) if o else None for o in self.overlaps]
        seen = [o for step in self.overlaps for o in step]
        return {
            "steps": self.step + 1,
            "bytes_moved": list(self.bytes_moved),
            "swaps": list(self.swaps),
            "blocks_swapped": list(self.blocks_swapped),
            "overlap": overlap,
            "bytes_moved_total": sum(self.bytes_moved),
            "swap_bytes_total": sum(self.bytes_moved[1:]),
            "swaps_total": sum(self.swaps),
            "mean_overlap": sum(seen) / len(seen) if seen else None,
            "prefill_d2h_bytes": self.prefill_d2h_bytes,
            "gpu_prompt_kv_bytes": gpu["prompt"],
            "gpu_generated_kv_bytes": gpu["generated"],
            "gpu_kv_bytes": gpu["prompt"] + gpu["generated"],
            "gpu_score_key_bytes": gpu["score_keys"],
            "gpu_total_bytes": gpu["prompt"] + gpu["generated"] + gpu["score_keys"],
            "gpu_buffer_capacity_bytes": gpu["buffer_capacity"],
            "host_kv_bytes": host,
            "resident_tokens": [0 if st is None else st.resident for st in self.layers],
            "active_tokens": [0 if st is None else st.slots * self.config.block_size + st.n_tail for st in self.layers],
            "selecting_layers": sorted(i for g in self.groups for i in g.layers),
            "groups": [list(g.layers) for g in self.groups],
        }
