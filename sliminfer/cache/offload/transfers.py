"""Host <-> device copies of the offload manager: prompt KV out at prefill, chosen blocks in at decode.

On CUDA the copies run on the manager's side streams and order themselves with events (see the package
docstring, "Stream ordering"); on the CPU the same code runs with plain copies, which is what CI checks.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from sliminfer.cache.offload.state import LayerKV


def on_stream(stream: Any) -> Any:
    """``torch.cuda.stream(stream)``, or nothing on the CPU (``stream`` None)."""
    return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def block_bytes(heads: int, block_size: int, d: int, element_size: int) -> int:
    """Bytes of one block's keys plus values."""
    return 2 * heads * block_size * d * element_size


def store_blocks(st: LayerKV, k: torch.Tensor, v: torch.Tensor, block_size: int, stream: Any, pin: bool) -> None:
    """Copy the layer's full prompt blocks to (pinned) host memory, block-major, on ``stream`` when given
    (the GPU copies may be freed once it is done: ``record_stream``)."""
    _, heads, _, d = k.shape
    n = st.n_blocks * block_size
    st.host = torch.empty((st.n_blocks, 2, heads, block_size, d), dtype=k.dtype, pin_memory=pin)
    src_k = k[0, :, :n].view(heads, st.n_blocks, block_size, d).transpose(0, 1)
    src_v = v[0, :, :n].view(heads, st.n_blocks, block_size, d).transpose(0, 1)
    if stream is None:
        st.host[:, 0].copy_(src_k)
        st.host[:, 1].copy_(src_v)
        return
    stream.wait_stream(torch.cuda.current_stream(k.device))
    with torch.cuda.stream(stream):  # block-major K/V on the device, then one copy out
        st.host.copy_(torch.stack((src_k, src_v), dim=1), non_blocking=True)
    k.record_stream(stream)  # the allocator may reuse them only after the copies
    v.record_stream(stream)


def copy_to_slots(moves: list[tuple[LayerKV, list[int], list[int]]], block_size: int, stream: Any, after: Any,
                  device: torch.device, pin: bool) -> int:
    """For each ``(layer, slots, blocks)``: copy the host blocks into the layer's device slots, on the copy
    ``stream`` (CUDA) once the event ``after`` (the previous step's reads of those slots) is done; each
    moved layer's ``ready`` becomes the event its attention must wait for. Host work is kept per call, not
    per layer: one upload of every layer's block and slot ids, then a gather (from the host alias) and a
    scatter per layer, one event. Returns the bytes copied."""
    moves = [(st, *zip(*sorted(zip(blocks, slots)))) for st, slots, blocks in moves if blocks]
    if not moves:
        return 0
    cuda = stream is not None
    copied = 0
    with on_stream(stream):
        if cuda:
            stream.wait_event(after)
        flat = [i for st, blocks, slots in moves if st.alias is not None for i in (*blocks, *slots)]
        ids = None
        if flat:
            ids = torch.tensor(flat, dtype=torch.long, pin_memory=cuda).to(device, non_blocking=True)
        offset = 0
        event = torch.cuda.Event() if cuda else None
        for st, blocks, slots in moves:
            n = len(blocks)
            if st.alias is not None:  # one gather kernel reads the chosen blocks from pinned host memory
                block_ids, slot_ids = ids[offset : offset + n], ids[offset + n : offset + 2 * n]
                offset += 2 * n
                stage = st.alias.index_select(0, block_ids)
            else:
                stage = _stage_runs(st, list(blocks))
                slot_ids = None
            _place(st, list(slots), slot_ids, stage, block_size, cuda and pin)
            st.ready = event
            copied += n * block_bytes(stage.shape[2], block_size, stage.shape[4], stage.element_size())
        if event is not None:
            event.record(stream)
    return copied


def _place(st: LayerKV, slots: list[int], slot_ids: torch.Tensor | None, stage: torch.Tensor, block_size: int,
           pin: bool) -> None:
    """Write ``stage`` ``[blocks, 2, kv_heads, block, d]`` into the layer's device slots ``slots``."""
    _, _, heads, _, d = st.buf.shape
    view = st.buf[:, :, :, : st.slots * block_size].view(2, 1, heads, st.slots, block_size, d)
    src = stage.permute(1, 2, 0, 3, 4).unsqueeze(1)  # [2, 1, kv_heads, blocks, block, d]
    if slots == list(range(st.slots)):
        view.copy_(src)
        return
    if slot_ids is None:
        slot_ids = torch.tensor(slots, dtype=torch.long, pin_memory=pin).to(st.buf.device, non_blocking=True)
    view.index_copy_(3, slot_ids, src)


def _stage_runs(st: LayerKV, blocks: list[int]) -> torch.Tensor:
    """The blocks (ascending) on the device, one copy per run of consecutive blocks (CUDA where the host
    memory has no device alias: not pinned)."""
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
