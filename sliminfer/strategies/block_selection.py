"""Turn block scores and a budget into the indices of the tokens that survive.

Kept always: the first block (attention sink), the last full block and every token after it (the
question and the token that produces the first output), per method.md's DECISION lines. The budget
counts all kept tokens, the partial tail included. Kept indices come back in original order, so plain
causal attention over the kept set stays exact.
"""

from __future__ import annotations

import torch


def blocks_to_keep(n_tokens: int, block_size: int, budget: int) -> int | None:
    """How many full blocks to keep, or None when the budget prunes nothing."""
    n_full = n_tokens // block_size
    tail = n_tokens - n_full * block_size
    keep = max(2, (budget - tail) // block_size)
    return keep if keep < n_full else None


def select_kept_indices(block_scores: torch.Tensor, n_tokens: int, block_size: int, keep_blocks: int) -> torch.Tensor:
    """Indices (into the current sequence) of the tokens kept: top blocks, sink, last block and tail.

    Args:
        block_scores: ``[n_full_blocks]`` scores of the full blocks.
        n_tokens: current sequence length (full blocks plus the partial tail).
        block_size: tokens per block.
        keep_blocks: full blocks to keep, sink and last block included (from :func:`blocks_to_keep`).
    """
    n_full = block_scores.shape[0]
    # forced blocks are added outside the top-k, so no score (NaN, +inf) can push them out
    middle = torch.nan_to_num(block_scores[1 : n_full - 1].float(), nan=float("-inf"))
    chosen = torch.topk(middle, keep_blocks - 2, sorted=False).indices + 1
    forced = torch.tensor([0, n_full - 1], device=block_scores.device)
    blocks = torch.cat([forced, chosen]).sort().values
    offsets = torch.arange(block_size, device=blocks.device)
    kept = (blocks[:, None] * block_size + offsets).reshape(-1)
    tail = torch.arange(n_full * block_size, n_tokens, device=blocks.device)
    return torch.cat([kept, tail])
