"""Which prompt blocks a selecting layer keeps active, and which of them move: tensor functions shared
by the eager manager (on host copies of the ids) and the static decode (on the device, in the graph).

The choice itself is the project's one block-selection policy
(:func:`~sliminfer.strategies.block_selection.selected_blocks`: sink blocks, the last block, the best of
the rest), scored by the manager's scorer on the token units' mean keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sliminfer.strategies.base import Scorer
from sliminfer.strategies.block_selection import selected_blocks


def choose_blocks(scorer: Scorer, queries: torch.Tensor, unit_keys: torch.Tensor, sink: int, slots: int) -> torch.Tensor:
    """The ``slots`` blocks each layer keeps, ascending: ``[layers, slots]``.

    ``queries`` ``[layers, q_heads, window, d]`` (the recent decode queries), ``unit_keys`` ``[layers,
    kv_heads, units, d]`` (one row per layer, the scorer's blocks being ``block_size / unit_size`` units)."""
    return selected_blocks(scorer.score_blocks(queries, unit_keys), sink, slots)


@dataclass
class Swaps:
    """What :func:`apply_swaps` moved, per layer row."""

    incoming: torch.Tensor  # [rows, slots] the blocks that enter, ascending; the first ``moves`` are valid
    slots: torch.Tensor  # [rows, slots] the slots they enter (those of the leaving blocks, by block id)
    moves: torch.Tensor  # [rows] blocks that move (0 where the selection overlaps enough)
    overlap: torch.Tensor  # [rows] float64: fraction of the selection that is active already
    swapped: torch.Tensor  # [rows] bool: overlap below gamma


def apply_swaps(selected: torch.Tensor, slot_block: torch.Tensor, gamma: float, n_blocks: int) -> Swaps:
    """Overlap-aware swapping: where the new selection ``selected`` ``[rows, slots]`` overlaps the active
    set (``slot_block`` ``[rows, slots]``: the block each slot holds) by less than ``gamma``, the newly
    selected blocks, in ascending order, take the slots of the blocks that left, in the order of those
    blocks' ids; elsewhere nothing moves. ``slot_block`` is updated in place (a captured graph holds it).
    ``n_blocks``: the layers' block count (larger than every block id; no device read, so this runs in a graph)."""
    big = n_blocks
    in_active = (selected.unsqueeze(2) == slot_block.unsqueeze(1)).any(dim=2)
    stays = (slot_block.unsqueeze(2) == selected.unsqueeze(1)).any(dim=2)
    overlap = in_active.sum(dim=1).double() / slot_block.shape[1]
    swapped = overlap < gamma
    incoming = torch.where(in_active, big, selected).sort(dim=1).values
    out_slots = torch.where(stays, big, slot_block).sort(dim=1, stable=True).indices
    moves = (~in_active).sum(dim=1) * swapped
    first = torch.arange(slot_block.shape[1], device=slot_block.device).unsqueeze(0) < moves.unsqueeze(1)
    slot_block.scatter_(1, out_slots, torch.where(first, incoming, slot_block.gather(1, out_slots)))
    return Swaps(incoming=incoming, slots=out_slots, moves=moves, overlap=overlap, swapped=swapped)
