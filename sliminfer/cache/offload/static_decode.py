"""Greedy decode over the offload manager's active blocks, with static shapes (a CUDA graph on GPUs).

The offload manager's eager decode (``StagedForward.decode_step`` with
:class:`~sliminfer.cache.offload.manager.OffloadingKVManager`) keeps its bookkeeping on the host: that is
exact and simple, but the step is bound by Python and kernel launches. This decoder moves the
selection and the swaps onto the device, so a whole step can be captured and replayed:

- each layer's static buffer holds its active prompt blocks (slot s = rows ``s*block .. (s+1)*block``),
  its tail and the generated tokens, as in the manager's device buffer, with a capacity for the new
  tokens; attention runs over the written part (a mask), exactly like :class:`StaticDecoder`;
- each selecting group keeps on the device: the block held by every slot, the unit mean keys, and a
  ring of the ``recent_window`` latest queries of each layer (their mean is the local query);
- after a group's last layer, on a side stream: score the blocks (the manager's own scorer), top-k,
  forced blocks, the overlap with the active set, and, where it is below gamma, the slot assignment
  (incoming blocks in ascending order into the slots of the outgoing ones, as the manager does) and the
  copies (:func:`~sliminfer.cache.offload.block_copy.copy_blocks`, which copies only the blocks that move,
  straight from pinned host memory). The side stream joins before the step's logits, so the copies
  overlap the later layers; the next step reads the new blocks. That is the manager's timing: the
  selection from the queries of steps <= t applies at step t + 1.

On GPUs the layers are compiled (``torch.compile``, like the GPU-resident decoder) in segments that end
after each selecting group's last layer; the selection and the copies run uncompiled between the
segments (they launch on the side stream and a Triton kernel), and the whole step is still one graph.

The first ``recent_window`` steps run eagerly through the manager (step 0 chooses each layer's first
active set from its own query; the ring then holds full windows), then the state is handed over.
Counters (swaps, blocks moved, overlap) accumulate on the device and are read once at the end.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from sliminfer.cache.offload.block_copy import copy_blocks, device_copy_available
from sliminfer.cache.offload.selection import apply_swaps, choose_blocks
from sliminfer.core.config import DecodeSection
from sliminfer.core.errors import ConfigError, InputError
from sliminfer.core.timing import now
from sliminfer.decode.compile_cache import compile_static
from sliminfer.decode.kernels import MASKED_KERNELS, fastest_masked_kernel
from sliminfer.decode.run import StaticOutcome, StaticRun
from sliminfer.decode.static import StaticDecoder

if TYPE_CHECKING:
    from sliminfer.cache.offload.manager import OffloadingKVManager
    from sliminfer.core.forward import StagedForward
    from sliminfer.decode.streaming import TokenSink
    from sliminfer.models.base import ModelAdapter

# compiled entries allowed per code object while this decoder compiles: its segments (one per selecting
# group, plus the last) for each decoder shape a process builds
COMPILED_ENTRIES = 64


@dataclass
class _DeviceGroup:
    """One selecting group's state on the device."""

    index: int
    layers: list[int]
    n_blocks: int
    slots: int
    slot_block: torch.Tensor  # [layers, slots] the block each slot holds
    ring: torch.Tensor  # [layers, q_heads, window, d] recent queries
    ring_pos: torch.Tensor  # [1] next ring entry to overwrite


class OffloadStaticDecoder(StaticDecoder):
    """Static decode for a prompt whose KV the offload manager holds (see the module docstring)."""

    reusable: ClassVar[bool] = False  # it holds its request's host KV and slot state
    #: q/k/v only: the gate/up copy (about 47% of a Llama's weights) would cost more GPU memory than the
    #: offload saves, for one launch less per layer (H200, 8B shape at 128k: benchmarks/results/)
    default_fuse: ClassVar[bool | str] = "qkv"

    def __init__(self, adapter: ModelAdapter, manager: OffloadingKVManager, max_new_tokens: int,
                 options: DecodeSection) -> None:
        kernel = self.kernel(options, manager.device)
        if manager.step < 0 or any(st is None or st.buf is None for st in manager.layers):
            raise InputError("offload decode: run the manager's first decode steps before handing over")
        device = manager.device
        if device.type == "cuda" and not device_copy_available(device):
            raise InputError("offload decode on CUDA needs Triton; decode eagerly instead (fast=False, decode.mode eager)")
        if any(st.selecting and st.alias is None for st in manager.layers):
            raise InputError("offload decode: cache.pin_memory is false; the static decode copies blocks from "
                             "pinned host memory (set pin_memory: true, or decode eagerly with fast=False)")
        self.manager = manager
        bs = manager.config.block_size
        caps = [st.used(bs) + max_new_tokens for st in manager.layers]
        any_buf = manager.layers[0].buf
        self._segment_fn = self._segment  # compiled by _compiled_step when compile is on (on GPUs by default)
        super().__init__(adapter, caps, max_new_tokens, dtype=any_buf.dtype, device=device,
                         options=options.model_copy(update={"kernel": kernel}))
        ends = {group.layers[-1] + 1: g for g, group in enumerate(manager.groups)}
        bounds = sorted(set(ends) | {adapter.num_layers})
        # (first layer, end layer, the group that reselects after the segment or None)
        self._segments = [(first, last, ends.get(last)) for first, last in zip([0, *bounds[:-1]], bounds)]
        self._side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._forked = False
        self.groups: list[_DeviceGroup] = []
        self._row_of: dict[int, tuple[_DeviceGroup, int]] = {}
        self.counters = torch.zeros(4, dtype=torch.float64, device=device)  # swaps, blocks, overlap sum, n

    @staticmethod
    def kernel(options: DecodeSection, device: torch.device) -> str:
        """The attention kernel for ``options`` on ``device`` (refused before any work where this decoder has none).

        ``auto`` is :func:`~sliminfer.decode.kernels.fastest_masked_kernel`, compiled or not (never ``flash``,
        which needs its own layout). Measured on an H100 at 128k (benchmarks/results/h100-2026-12-07c): the offload decode 4.8 % slower
        than the GPU-resident one with ``triton``, 7.6 % with ``split``."""
        if options.kernel != "auto" and options.kernel not in MASKED_KERNELS:  # flash needs its own layout
            raise ConfigError("decode.kernel", options.kernel, "the offload manager's static decode takes 'auto', "
                              + ", ".join(f"'{k}'" for k in MASKED_KERNELS))
        return fastest_masked_kernel(device) if options.kernel == "auto" else options.kernel

    # hand-over -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def load_offload(self, token: torch.Tensor, position: int) -> None:
        """Take the manager's state (after its eager steps): buffers, slots, recent queries; ``token`` is
        the last generated token, to be fed at ``position``."""
        m = self.manager
        for group in m.groups:  # the last eager step's selections: apply them now, as step t + 1 would
            if group.pending:
                m.apply_group(group)
        if m.cuda:
            torch.cuda.synchronize(self.device)  # those copies are in the manager's buffers before we read them
        bs = m.config.block_size
        for layer, st in enumerate(m.layers):
            used = st.used(bs)
            self.keys[layer].zero_()
            self.values[layer].zero_()
            self.keys[layer][:, :, :used].copy_(st.buf[0][:, :, :used])
            self.values[layer][:, :, :used].copy_(st.buf[1][:, :, :used])
            self.bias[layer].fill_(float("-inf"))
            self.bias[layer][..., :used] = 0.0
            self.lens[layer] = used
        fresh = self._group_state()
        if not self.groups:
            self.groups = fresh
            self._row_of = {layer: (dg, row) for dg in fresh for row, layer in enumerate(dg.layers)}
        else:  # a captured graph holds these tensors: refill them in place
            for dg, new in zip(self.groups, fresh):
                for name in ("slot_block", "ring", "ring_pos"):
                    getattr(dg, name).copy_(getattr(new, name))
        self.n_prompt.fill_(position)
        self.step.zero_()
        self.token.copy_(token.reshape(1, 1))
        self.generated.zero_()
        self.generated[:1].copy_(token.reshape(1))
        self.counters.zero_()
        self._steps_done = 0
        if self.use_graph and self.graph is None and self.graph_error is None and self.max_new_tokens > 1:
            self._capture()
            self.load_offload(token, position)  # the capture's warm-up steps moved the state on

    def _group_state(self) -> list[_DeviceGroup]:
        """The manager's selecting groups as device state: forced blocks, slot contents, query rings."""
        m = self.manager
        groups = []
        for g, group in enumerate(m.groups):
            states = [m.layers[i] for i in group.layers]
            if any(len(st.queries) != m.config.recent_window for st in states):
                raise InputError("offload decode: hand over after recent_window eager steps (full query windows)")
            groups.append(_DeviceGroup(
                index=g, layers=list(group.layers), n_blocks=group.n_blocks, slots=group.slots,
                slot_block=torch.tensor([st.slot_block for st in states], dtype=torch.long, device=self.device),
                ring=torch.cat([torch.cat(list(st.queries), dim=2) for st in states]),  # [layers, q_heads, window, d]
                ring_pos=torch.zeros(1, dtype=torch.long, device=self.device),
            ))
        return groups

    @property
    def steps_run(self) -> int:
        """Graph (or static) steps since the hand-over: the counters cover exactly these."""
        return self._steps_done or 0

    # inside the step -------------------------------------------------------------------------------
    def _step(self) -> torch.Tensor:
        """The layers in segments that end after each selecting group; after a group's segment its
        selection and copies start on the side stream, which joins once the last segment is queued."""
        carry = None
        with self._compile_limit():
            for first, last, group in self._segments:
                carry = self._segment_fn(carry, first, last)
                if group is not None:
                    self._fork_reselect(self.groups[group])
        if self._forked:
            torch.cuda.current_stream(self.device).wait_stream(self._side)
            self._forked = False
        return carry

    def _compile_limit(self) -> Any:
        """Each segment is its own compiled entry of ``_segment``: lift torch's default of 8 entries per
        function, past which later segments (or decoders) would run uncompiled without an error."""
        if not self.compiled:
            return contextlib.nullcontext()
        limit = max(torch._dynamo.config.recompile_limit, COMPILED_ENTRIES)
        return torch._dynamo.config.patch(recompile_limit=limit)

    def _compiled_step(self) -> Any:
        """Compile the segments, not the step: the copies run uncompiled between them (see _step)."""
        self._segment_fn = compile_static(self._segment, self.autotune)
        return self._step

    def _uncompile(self) -> None:
        super()._uncompile()
        self._segment_fn = self._segment

    def _after_layer(self, layer: int, q: torch.Tensor) -> None:
        found = self._row_of.get(layer)
        if found is None:
            return
        dg, row = found
        dg.ring[row].index_copy_(1, dg.ring_pos, q[0])
        if layer == dg.layers[-1]:
            dg.ring_pos.add_(1).remainder_(dg.ring.shape[2])

    def _fork_reselect(self, dg: _DeviceGroup) -> None:
        if self._side is None:
            self._reselect(dg)
            return
        self._side.wait_stream(torch.cuda.current_stream(self.device))
        self._forked = True
        with torch.cuda.stream(self._side):
            self._reselect(dg)

    def _reselect(self, dg: _DeviceGroup) -> None:
        """Choose the group's blocks for the next step from its query rings, and move them in."""
        m = self.manager
        selected = choose_blocks(m.unit_scorer, dg.ring, m.groups[dg.index].unit_keys, m.config.sink_blocks, dg.slots)
        swaps = apply_swaps(selected, dg.slot_block, m.config.gamma, dg.n_blocks)
        for row, layer in enumerate(dg.layers):
            copy_blocks(m.layers[layer].alias, self.keys[layer], self.values[layer], swaps.incoming[row],
                        swaps.slots[row], swaps.moves[row : row + 1])
        self.counters[:3].add_(torch.stack([swaps.swapped.sum().double(), swaps.moves.sum().double(),
                                            swaps.overlap.sum()]))
        self.counters[3:].add_(float(len(dg.layers)))

    # results ---------------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Per graph step: layers that swapped, blocks moved and their bytes; mean overlap."""
        swaps, blocks, overlap, n = self.counters.tolist()
        steps = max(self.steps_run, 1)
        m = self.manager
        st = next((s for s in m.layers if s.host is not None), None)
        block_bytes = 0 if st is None else st.host[0].numel() * st.host.element_size()
        return {"steps": self.steps_run, "swaps_per_step": swaps / steps, "blocks_per_step": blocks / steps,
                "bytes_moved_per_step": blocks * block_bytes / steps, "mean_overlap": overlap / n if n else None}


class OffloadStaticRun(StaticRun):
    """The offload manager's static run: prefill, ``recent_window`` eager steps through the manager (step 0
    chooses each layer's first active set from its own query; the rings then hold full windows), then
    :class:`OffloadStaticDecoder` for the rest."""

    def __init__(self, manager: OffloadingKVManager) -> None:
        self.manager = manager

    def run(self, forward: StagedForward, ids: torch.Tensor, max_new_tokens: int,
            options: DecodeSection, sink: TokenSink | None = None) -> StaticOutcome:
        cache = self.manager
        device = ids.device
        OffloadStaticDecoder.kernel(options, device)  # refuse a kernel it lacks before the prefill
        start = now(device)
        prefill = forward.prefill(ids, cache)
        token = prefill.logits.argmax(dim=-1, keepdim=True)
        ttft = now(device) - start
        tokens = [int(token)]
        stopped = sink is not None and sink.take(tokens[-1])
        position = prefill.next_position
        for _ in range(min(cache.config.recent_window, max_new_tokens - 1)):
            if stopped:
                break
            token = forward.decode_step(token, position, cache).argmax(dim=-1, keepdim=True)
            tokens.append(int(token))
            stopped = sink is not None and sink.take(tokens[-1])
            position += 1
        remaining = 0 if stopped else max_new_tokens - len(tokens)
        decoder = None
        steps = 0
        ready = end = now(device)
        if remaining > 0:
            decoder = OffloadStaticDecoder(forward.adapter, cache, remaining + 1, options)
            decoder.load_offload(token, position)
            ready = now(device)
            steps = decoder.decode(remaining, sink)
            end = now(device)
            tokens += decoder.tokens(steps + 1)[1:]
        return StaticOutcome(tokens, start, ttft, ready, end, steps, prefill, decoder)
