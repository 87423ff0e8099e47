"""Copy a device-chosen number of KV blocks from host memory into device slots, without the host.

The graph-captured offload decode decides on the GPU which blocks enter which slots, and how many
(none when the new selection overlaps the active set by at least gamma). A captured graph cannot ask
the host for that count, and an ``index_select`` over all slots would read every active block over
PCIe at every step. This kernel takes the count from device memory and copies only that many blocks:
program ``(i, head)`` copies block ``blocks[i]``'s keys and values of one KV head into slot
``slots[i]`` when ``i < count``, reading the pinned host buffer through its device alias
(:mod:`sliminfer.cache.offload.host_alias`). On the CPU the same copy is done with index operations.
"""

from __future__ import annotations

import torch

try:  # Triton comes with CUDA builds of torch
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU builds
    triton = None

if triton is not None:

    @triton.jit
    def _copy_blocks_kernel(src, dst_k, dst_v, blocks, slots, count, src_block_stride, src_kv_stride,
                            src_head_stride, dst_head_stride, ROWS: tl.constexpr, CHUNK: tl.constexpr):
        i = tl.program_id(0)
        head = tl.program_id(1)
        n = tl.load(count)
        if i < n:
            block = tl.load(blocks + i)
            slot = tl.load(slots + i)
            k_src = src + block * src_block_stride + head * src_head_stride
            v_src = k_src + src_kv_stride
            k_dst = dst_k + head * dst_head_stride + slot * ROWS
            v_dst = dst_v + head * dst_head_stride + slot * ROWS
            for start in range(0, ROWS, CHUNK):
                offs = start + tl.arange(0, CHUNK)
                tl.store(k_dst + offs, tl.load(k_src + offs))
                tl.store(v_dst + offs, tl.load(v_src + offs))


def device_copy_available(device: torch.device) -> bool:
    return device.type == "cuda" and triton is not None


def copy_blocks(source: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, blocks: torch.Tensor,
                slots: torch.Tensor, count: torch.Tensor) -> None:
    """Copy ``source[blocks[i]]`` (``[n_blocks, 2 (K, V), kv_heads, block, d]``) into slot ``slots[i]``
    of ``keys``/``values`` (``[1, kv_heads, capacity, d]``, slot s = rows ``s*block .. (s+1)*block``)
    for ``i < count`` (a one-element device tensor).

    On CUDA ``source`` is the device alias of pinned host memory and nothing syncs with the host (the
    call can be captured in a CUDA graph); on the CPU it is the host tensor itself.
    """
    _, _, heads, block, d = source.shape
    if keys.device.type == "cuda":
        if triton is None:
            raise RuntimeError("copy_blocks on CUDA needs Triton (it ships with CUDA builds of torch)")
        rows = block * d
        chunk = min(1024, triton.next_power_of_2(rows))
        if rows % chunk:
            raise ValueError(f"block_size * head_dim = {rows} must be a multiple of {chunk}")
        _copy_blocks_kernel[(blocks.numel(), heads)](
            source, keys, values, blocks, slots, count, source.stride(0), source.stride(1), source.stride(2),
            keys.stride(1), ROWS=rows, CHUNK=chunk)
        return
    n = int(count)
    if n == 0:
        return
    stage = source.index_select(0, blocks[:n].to(source.device)).to(keys.device)  # [n, 2, heads, block, d]
    index = slots[:n]
    for kv, buf in enumerate((keys, values)):
        view = buf[:, :, : buf.shape[2] // block * block].view(1, heads, -1, block, d)
        view.index_copy_(2, index, stage[:, kv].transpose(0, 1).unsqueeze(0))
