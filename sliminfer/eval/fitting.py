"""Fitting a prompt to a token length, and placing an item at a depth, with exact token counts.

Why exact counts: "4k tokens" must mean 4k tokens as the pipeline will see them (chat template
included), or the length axis of every table is off by the tokenizer's whims. Counting one
candidate prompt costs a few milliseconds, so a binary search over the number of filler pieces is
both exact and cheap.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence

from sliminfer.core.errors import InputError


def largest_fitting(build: Callable[[int], str], count: Callable[[str], int], target: int, upper: int) -> int:
    """The largest ``k`` in ``0..upper`` with ``count(build(k)) <= target``.

    Assumes the count grows with ``k`` (more filler, more tokens); raises if even ``k = 0`` is too
    long, because then no prompt of that length exists.
    """
    if count(build(0)) > target:
        raise InputError(f"length {target}: even the prompt without filler has {count(build(0))} tokens")
    lo, hi = 0, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(build(mid)) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo


def insertion_index(piece_tokens: Sequence[int], depth: float) -> int:
    """The boundary (``0..len(pieces)``) whose share of the tokens before it is closest to ``depth``.

    Boundary ``i`` lies between piece ``i - 1`` and piece ``i``, so an item inserted there starts a
    piece of its own (a sentence boundary when the pieces are sentences).
    """
    if not 0.0 <= depth <= 1.0:
        raise InputError(f"depth: got {depth}; must be in [0, 1]")
    cumulative = [0, *itertools.accumulate(piece_tokens)]
    goal = depth * cumulative[-1]
    i = bisect.bisect_left(cumulative, goal)
    if i > 0 and (i == len(cumulative) or goal - cumulative[i - 1] <= cumulative[i] - goal):
        i -= 1
    return i


def boundary_depth(piece_tokens: Sequence[int], index: int) -> float:
    """The share of the pieces' tokens that lie before boundary ``index``."""
    total = sum(piece_tokens)
    return sum(piece_tokens[:index]) / total if total else 0.0
