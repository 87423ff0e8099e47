"""The one block-selection policy: the sink blocks and the last full block always, the best-scored rest.

Used by the prefill's pruning (:func:`select_kept_indices`) and by the offload manager's active-set
choice at decode, eager and static (:mod:`sliminfer.cache.offload.selection`), so the three cannot
drift apart. Per method.md's DECISION lines the prefill keeps one sink block, the last full block and
every token after it (the question and the token that produces the first output); the budget counts
all kept tokens, the partial tail included. Kept indices come back in original order, so plain causal
attention over the kept set stays exact.

The forced blocks are added outside the top-k, so no score (NaN, +inf) can push them out.
"""

from __future__ import annotations

import torch

PREFILL_SINK_BLOCKS = 1


def blocks_to_keep(n_tokens: int, block_size: int, budget: int) -> int | None:
    """How many full blocks to keep, or None when the budget prunes nothing."""
    n_full = n_tokens // block_size
    tail = n_tokens - n_full * block_size
    keep = max(PREFILL_SINK_BLOCKS + 1, (budget - tail) // block_size)
    return keep if keep < n_full else None


def forced_blocks(n_blocks: int, sink: int, device: torch.device | None = None) -> torch.Tensor:
    """The blocks always kept: ``0 .. sink - 1`` and the last one, ``[sink + 1]``.

    Built on the device without a host-to-device copy: the static offload decode calls this inside a
    CUDA graph capture, where a copy from pageable host memory is not allowed."""
    ids = torch.arange(sink + 1, dtype=torch.long, device=device)
    return ids + (ids == sink).long() * (n_blocks - 1 - sink)  # no item assignment: that copies a host scalar


def top_middle_blocks(scores: torch.Tensor, sink: int, picks: int) -> torch.Tensor:
    """Ids of the ``picks`` best-scored blocks among ``sink .. n - 2`` of ``scores`` ``[..., n]``
    (unsorted; NaN scores rank last): ``[..., picks]``."""
    n = scores.shape[-1]
    middle = torch.nan_to_num(scores[..., sink : n - 1].float(), nan=float("-inf"))
    return torch.topk(middle, picks, dim=-1, sorted=False).indices + sink


def selected_blocks(scores: torch.Tensor, sink: int, keep: int) -> torch.Tensor:
    """The ``keep`` blocks chosen from ``scores`` ``[..., n]``: forced ones plus the best of the middle,
    in ascending order, ``[..., keep]``."""
    chosen = top_middle_blocks(scores, sink, keep - sink - 1)
    forced = forced_blocks(scores.shape[-1], sink, scores.device).expand(*chosen.shape[:-1], sink + 1)
    return torch.cat([forced, chosen], dim=-1).sort(dim=-1).values


def select_kept_indices(block_scores: torch.Tensor, n_tokens: int, block_size: int, keep_blocks: int) -> torch.Tensor:
    """Indices (into the current sequence) of the tokens kept: top blocks, sink, last block and tail.

    Args:
        block_scores: ``[n_full_blocks]`` scores of the full blocks.
        n_tokens: current sequence length (full blocks plus the partial tail).
        block_size: tokens per block.
        keep_blocks: full blocks to keep, sink and last block included (from :func:`blocks_to_keep`).
    """
    n_full = block_scores.shape[0]
    blocks = selected_blocks(block_scores, PREFILL_SINK_BLOCKS, keep_blocks)
    offsets = torch.arange(block_size, device=blocks.device)
    kept = (blocks[:, None] * block_size + offsets).reshape(-1)
    tail = torch.arange(n_full * block_size, n_tokens, device=blocks.device)
    return torch.cat([kept, tail])
