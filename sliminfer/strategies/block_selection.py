"""The one block-selection policy: the sink blocks and the last full block always, the best-scored rest.

Used by the prefill's pruning (:func:`select_kept_indices`) and by the offload manager's active-set
choice at decode, eager and static (:mod:`sliminfer.cache.offload.selection`), so the three cannot
drift apart. Per method.md's DECISION lines the prefill keeps one sink block, the last full block and
every token after it (the question and the token that produces the first output); the budget counts
all kept tokens, the partial tail included. Kept indices come back in original order, so plain causal
attention over the kept set stays exact.

The prefill also keeps every full block that holds one of the scorer's ``window`` query tokens
(:func:`window_blocks`): the tokens that voted survive, as SnapKV and FastKV keep their observation
window. With a window no longer than the tail plus one block (SlimInfer's 4 tokens in blocks of 64)
that is the last full block alone, the rule above; with single-token blocks and a window of 8
(FastKV) it is the last 8 tokens.

The forced blocks are added outside the top-k, so no score (NaN, +inf) can push them out.
"""

from __future__ import annotations

import torch

from sliminfer.core.errors import ConfigError

PREFILL_SINK_BLOCKS = 1


def window_blocks(n_tokens: int, block_size: int, window: int) -> int:
    """How many full blocks at the end of ``n_tokens`` tokens hold one of the last ``window`` tokens (the
    scorer's query window), and at least one: the last full block is always kept."""
    tail = n_tokens % block_size
    return max(1, -(-(window - tail) // block_size))


def fewest_kept_tokens(block_size: int, window: int) -> int:
    """The fewest prompt tokens a pruning stage keeps whatever its budget (tail aside): the sink blocks and the
    full blocks that hold the scorer's ``window`` queries, at least the last one."""
    return (PREFILL_SINK_BLOCKS + window_blocks(0, block_size, window)) * block_size  # no tail: the most blocks


def check_budget_fits_window(block_size: int, window: int, smallest_budget: int | None, field: str) -> None:
    """Refuse a smallest budget below :func:`fewest_kept_tokens` (``None``: relative budgets, not checkable
    here), instead of silently keeping more than it says; ``field`` is the pruning section's."""
    floor = fewest_kept_tokens(block_size, window)
    if smallest_budget is None or smallest_budget >= floor:
        return
    if window <= block_size:
        raise ConfigError(f"{field}.schedule.budgets", smallest_budget, f"must be at least {floor // block_size} "
                          f"blocks ({floor} tokens): the sink and the last block are always kept")
    raise ConfigError(f"{field}.scorer.window", window, f"the blocks holding the window's queries are always kept: "
                      f"with the sink {floor} tokens, more than the smallest budget {smallest_budget}; use a window "
                      f"of at most {smallest_budget - PREFILL_SINK_BLOCKS * block_size} tokens, or larger budgets")


def blocks_to_keep(n_tokens: int, block_size: int, budget: int, window: int = 1) -> int | None:
    """How many full blocks to keep, or None when the budget prunes nothing (``window``: the scorer's,
    whose blocks are kept whatever the budget)."""
    n_full = n_tokens // block_size
    tail = n_tokens - n_full * block_size
    keep = max(PREFILL_SINK_BLOCKS + window_blocks(n_tokens, block_size, window), (budget - tail) // block_size)
    return keep if keep < n_full else None


def forced_blocks(n_blocks: int, sink: int, device: torch.device | None = None, last: int = 1) -> torch.Tensor:
    """The blocks always kept: ``0 .. sink - 1`` and the ``last`` ones, ``[sink + last]``.

    Built on the device without a host-to-device copy: the static offload decode calls this inside a
    CUDA graph capture, where a copy from pageable host memory is not allowed."""
    ids = torch.arange(sink + last, dtype=torch.long, device=device)
    return ids + (ids >= sink).long() * (n_blocks - last - sink)  # no item assignment: that copies a host scalar


def top_middle_blocks(scores: torch.Tensor, sink: int, picks: int, last: int = 1) -> torch.Tensor:
    """Ids of the ``picks`` best-scored blocks among ``sink .. n - 1 - last`` of ``scores`` ``[..., n]``
    (unsorted; NaN scores rank last): ``[..., picks]``."""
    n = scores.shape[-1]
    middle = torch.nan_to_num(scores[..., sink : n - last].float(), nan=float("-inf"))
    return torch.topk(middle, picks, dim=-1, sorted=False).indices + sink


def selected_blocks(scores: torch.Tensor, sink: int, keep: int, last: int = 1) -> torch.Tensor:
    """The ``keep`` blocks chosen from ``scores`` ``[..., n]``: forced ones (``sink`` first, ``last`` last)
    plus the best of the middle, in ascending order, ``[..., keep]``."""
    chosen = top_middle_blocks(scores, sink, keep - sink - last, last)
    forced = forced_blocks(scores.shape[-1], sink, scores.device, last).expand(*chosen.shape[:-1], sink + last)
    return torch.cat([forced, chosen], dim=-1).sort(dim=-1).values


def select_kept_indices(block_scores: torch.Tensor, n_tokens: int, block_size: int, keep_blocks: int,
                        window: int = 1) -> torch.Tensor:
    """Indices (into the current sequence) of the tokens kept: top blocks, sink, the window's blocks
    (the last one at least) and the tail.

    Args:
        block_scores: ``[n_full_blocks]`` scores of the full blocks.
        n_tokens: current sequence length (full blocks plus the partial tail).
        block_size: tokens per block.
        keep_blocks: full blocks to keep, forced ones included (from :func:`blocks_to_keep`, given the
            same ``window``).
        window: the scorer's query window (:func:`window_blocks`).
    """
    n_full = block_scores.shape[0]
    last = window_blocks(n_tokens, block_size, window)
    blocks = selected_blocks(block_scores, PREFILL_SINK_BLOCKS, keep_blocks, last)
    offsets = torch.arange(block_size, device=blocks.device)
    kept = (blocks[:, None] * block_size + offsets).reshape(-1)
    tail = torch.arange(n_full * block_size, n_tokens, device=blocks.device)
    return torch.cat([kept, tail])
