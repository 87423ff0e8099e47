"""Block-sparse causal attention over a :class:`~.blocks.BlockSelection`.

On CUDA: torch's FlexAttention, with the BlockMask made straight from the selection's block indices
(``BlockMask.from_kv_blocks``): the off-diagonal kept blocks are "full" blocks (no mask evaluated), the
diagonal block is the one "partial" block of each row, where a causal ``mask_mod`` applies. That is
also where the padded keys of a partial last block lie (only the last query block reaches the last key
block), so causality masks them too. ``flex_attention`` is compiled once per process, on first use:
uncompiled it falls back to a dense implementation that ignores the block sparsity.

Elsewhere (and as the test oracle of the CUDA path): :func:`masked_reference_attention`, dense SDPA
with the selection's token mask, which computes exactly the same (query, key) pairs, in the input
dtype, a chunk of query blocks at a time so the mask and scores stay small.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from sliminfer.strategies.sparse_attention.blocks import BlockSelection

#: query rows x keys x heads of one chunk of the reference (its fp32 scores: 128 MiB)
REFERENCE_CHUNK_ELEMENTS = 1 << 25

#: FlexAttention kernel options of every block-sparse prefill. ``ROWS_GUARANTEED_SAFE``: every query row
#: attends to at least its own key (a selection always keeps the diagonal block, whose mask is causal), so
#: the kernel may skip its guard against fully masked rows; the result is the same, the loop shorter.
FLEX_KERNEL_OPTIONS: dict[str, Any] = {"ROWS_GUARANTEED_SAFE": True}

#: added on Hopper GPUs (compute capability 9.x) for contiguous inputs, where FlexAttention can load tiles with
#: the Tensor Memory Accelerator: measured on an H100 at 128k and 10 % of the blocks (contiguous q/k/v), 32.4
#: against 33.9 ms with the same output bit for bit (benchmarks/results/h100-2026-12-07b). Torch calls it
#: experimental and Hopper-only, and TMA over strided inputs has an open misaligned-address failure on H100
#: (pytorch/pytorch#170813): the transposed q/k/v views of a model's attention run without it.
HOPPER_KERNEL_OPTIONS: dict[str, Any] = {"USE_TMA": True}

_compiled_flex: Callable[..., torch.Tensor] | None = None


def check_inputs(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, selection: BlockSelection) -> None:
    """Refuse shapes the kernels would silently misread: the layout of the ``attend`` interface, grouped
    query heads, a prefill over itself, and a selection made for these heads and this length."""
    if query.dim() != 4 or key.shape != value.shape or key.dim() != 4:
        raise ValueError(f"expected query [b, q_heads, n, d] and key/value [b, kv_heads, n, d]; got "
                         f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
    b, heads, n, d = query.shape
    if key.shape[0] != b or key.shape[2] != n or key.shape[3] != d or heads % key.shape[1]:
        raise ValueError(f"query {tuple(query.shape)} and key {tuple(key.shape)} must share batch, length and head "
                         "dim, with q_heads a multiple of kv_heads (a block-sparse prefill attends to itself)")
    if tuple(selection.counts.shape[:2]) != (b, heads) or selection.seq_len != n:
        raise ValueError(f"the selection is for batch/heads {tuple(selection.counts.shape[:2])} and "
                         f"{selection.seq_len} tokens; the query has {(b, heads)} and {n}")


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    selection: BlockSelection,
    scale: float,
) -> torch.Tensor:
    """Causal attention of ``query`` ``[b, q_heads, n, d]`` over ``key``/``value`` ``[b, kv_heads, n, d]``
    (grouped heads not repeated) restricted to ``selection``'s blocks: ``[b, q_heads, n, d]``.

    FlexAttention on CUDA, :func:`masked_reference_attention` elsewhere; both compute the same pairs (and
    check their inputs with :func:`check_inputs`).
    """
    if query.device.type == "cuda":
        return flex_block_sparse_attention(query, key, value, selection, scale)
    return masked_reference_attention(query, key, value, selection, scale)


def masked_reference_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    selection: BlockSelection,
    scale: float,
) -> torch.Tensor:
    """Dense SDPA restricted by the selection's token mask (kept blocks AND causal), in the input dtype."""
    check_inputs(query, key, value, selection)
    b, heads, n, _ = query.shape
    group = heads // key.shape[1]
    key, value = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1)
    size = selection.block_size
    step = max(1, REFERENCE_CHUNK_ELEMENTS // (b * heads * n * size))  # query blocks per chunk
    out = torch.empty_like(query)
    for first in range(0, selection.num_blocks, step):
        rows = slice(first * size, min((first + step) * size, n))
        mask = selection.token_mask(first, first + step)
        out[:, :, rows] = F.scaled_dot_product_attention(query[:, :, rows], key, value, attn_mask=mask, scale=scale)
    return out


def _causal(batch: Any, head: Any, q_idx: Any, kv_idx: Any) -> Any:
    """FlexAttention mask_mod of the diagonal blocks (and of the padded keys of a partial last block)."""
    return q_idx >= kv_idx


def flex_block_mask(selection: BlockSelection) -> Any:
    """The selection as a FlexAttention ``BlockMask``: its kept blocks but the diagonal as full blocks,
    the diagonal as each row's one partial block with a causal mask_mod.

    The full blocks reuse the selection's indices as they are: the diagonal is the last kept entry of
    each row, so the first ``counts - 1`` entries are exactly the off-diagonal kept blocks.
    """
    from torch.nn.attention.flex_attention import BlockMask

    counts, indices = selection.counts, selection.indices
    n_blocks = selection.num_blocks
    diagonal = torch.zeros_like(indices)
    diagonal[..., 0] = torch.arange(n_blocks, dtype=indices.dtype, device=indices.device)
    # the transposed (backward-pass) indices cost time and memory, and a prefill never needs them
    accepted = inspect.signature(BlockMask.from_kv_blocks).parameters
    extra = {"compute_q_blocks": False} if "compute_q_blocks" in accepted else {}
    return BlockMask.from_kv_blocks(
        torch.ones_like(counts), diagonal, counts - 1, indices, BLOCK_SIZE=selection.block_size, mask_mod=_causal,
        seq_lengths=(selection.seq_len, selection.seq_len), **extra,
    )


def compiled_flex_attention() -> Callable[..., torch.Tensor]:
    """``torch.compile(flex_attention)``, made once per process on first use (``fullgraph``: a graph break
    would run the dense fallback, which ignores the block mask)."""
    global _compiled_flex
    if _compiled_flex is None:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled_flex = torch.compile(flex_attention, fullgraph=True)
    return _compiled_flex


#: FlexAttention's largest tile: lengths that are multiples of it (and of the block mask's block) need no
#: bounds checks on the tiles' loads
FLEX_TILE_MULTIPLE = 128


def flex_kernel_options(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        block_size: int) -> dict[str, Any]:
    """The FlexAttention options for these query/key/value tensors and a block mask of ``block_size`` blocks:
    :data:`FLEX_KERNEL_OPTIONS`; on CUDA ``IS_DIVISIBLE`` from the actual lengths; plus
    :data:`HOPPER_KERNEL_OPTIONS` when all are contiguous on a compute capability 9.x GPU.

    ``IS_DIVISIBLE``: torch decides it from the lengths it compiled for, and once a second length or layout
    has made the compiled kernel dynamic it no longer knows them, so a 32k prompt would run the kernel with
    bounds-checked loads. Told here from the real lengths, the dynamic kernel keeps the unchecked loads where
    they are safe: both lengths multiples of the largest tile and of the mask's block (a block reaching past
    the end would have its tiles there read unchecked). Each value compiles a kernel of its own."""
    options = dict(FLEX_KERNEL_OPTIONS)
    device = query.device
    if device.type != "cuda":
        return options
    options["IS_DIVISIBLE"] = all(n % FLEX_TILE_MULTIPLE == 0 and n % block_size == 0
                                  for n in (query.shape[-2], key.shape[-2]))
    if all(t.is_contiguous() for t in (query, key, value)) and torch.cuda.get_device_capability(device)[0] == 9:
        options.update(HOPPER_KERNEL_OPTIONS)
    return options


def flex_block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    selection: BlockSelection,
    scale: float,
    block_mask: Any = None,
    kernel_options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """FlexAttention over the selection (``block_mask``: one made by :func:`flex_block_mask` already;
    ``kernel_options``: FlexAttention's, :func:`flex_kernel_options` when None; each new set compiles anew)."""
    check_inputs(query, key, value, selection)
    mask = flex_block_mask(selection) if block_mask is None else block_mask
    grouped = query.shape[1] != key.shape[1]
    if kernel_options is None:
        options = flex_kernel_options(query, key, value, selection.block_size)
    else:
        options = dict(kernel_options)
    return compiled_flex_attention()(query, key, value, block_mask=mask, scale=scale, enable_gqa=grouped,
                                     kernel_options=options)


__all__ = [
    "FLEX_KERNEL_OPTIONS",
    "FLEX_TILE_MULTIPLE",
    "HOPPER_KERNEL_OPTIONS",
    "block_sparse_attention",
    "compiled_flex_attention",
    "flex_block_mask",
    "flex_block_sparse_attention",
    "flex_kernel_options",
    "masked_reference_attention",
]
