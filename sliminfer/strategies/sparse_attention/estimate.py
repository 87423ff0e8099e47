"""The estimators: which key blocks each head's queries will need, read off a cheap sample of the
attention, before the sparse kernel runs.

Both methods start from the attention of the prompt's LAST queries over all keys (softmax in fp32,
causal among those queries), reduced two ways: per key (a "vertical" column: a token every later query
attends to, such as a sink or a key fact) and per diagonal offset ``query - key`` (a "slash": attention
at a fixed distance, such as the local window or periodic structure). On the block grid a column is a
key block for every query block, a slash a block distance ``q_block - k_block``.

- MInference (Jiang et al., NeurIPS 2024, arXiv 2407.02490; its vertical-and-slash pattern, the one it
  estimates online): the last 64 queries; the top 1000 columns and the top 6096 diagonals, the first 30
  columns and the 100 nearest diagonals always among them; each chosen token column or diagonal marks
  every block it passes through (a diagonal at offset ``o = d * block + r`` crosses block distance ``d``
  and, when ``r > 0``, ``d + 1``), so the blocks computed hold every pair MInference computes.
- FlexPrefill (Lai et al., ICLR 2025, arXiv 2502.20766): per head, the last query block's attention
  ``a`` pooled over key blocks, against the estimate ``a_hat`` from the block-averaged last query and
  block-averaged keys. If ``sqrt(JSD(a_hat, a)) < tau`` the pooled estimate is trustworthy and the head
  is "query-aware": every query block gets the key blocks of its own pooled estimate ``softmax(q_bar
  k_bar^T)``, the highest first, until they hold ``gamma`` of the whole grid's estimated mass (plus the
  minimum budget of columns and diagonals). Otherwise the head is "vertical-slash": as many column
  blocks and diagonal blocks as the columns and diagonals (counted in tokens, rounded up to blocks, at
  least ``min_budget`` tokens) that reach ``gamma`` of the last block's attention, the best by their
  pooled mass. The sink block and the diagonal are always among them.

Each estimator gives either the kept-block grid (its own budget rule) or, for a fixed density, a score
per block (its estimated attention mass) that :func:`top_density` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sliminfer.strategies.sparse_attention.blocks import (
    causal_block_count,
    causal_blocks,
    forced_blocks,
    num_blocks,
)

#: MInference always keeps the first 30 columns (the sink) and the 100 nearest diagonals (the local window)
MINFERENCE_SINK_COLUMNS = 30
MINFERENCE_LOCAL_DIAGONALS = 100


# the last queries' attention, reduced ----------------------------------------------------------------
def diagonal_sums(attention: torch.Tensor) -> torch.Tensor:
    """``[..., m, n]`` attention of the last ``m`` of ``n`` positions -> ``[..., n]``, entry ``o`` the sum of
    the weights at offset ``query - key = o``.

    Row ``i`` is position ``n - m + i``. Left-padded by ``m`` zeros, the view with a row stride one longer
    than the row shifts row ``i`` left by ``i``, so column ``t`` of the view holds offset ``n - t`` in
    every row: one strided view and one sum, no index tensor of ``m x n`` entries.
    """
    m, n = attention.shape[-2:]
    padded = torch.nn.functional.pad(attention, (m, 0)).contiguous()
    lead = padded.shape[:-2]
    strides = (*padded.stride()[:-2], n + m + 1, 1)
    skewed = padded.as_strided((*lead, m, n + 1), strides)
    return skewed.sum(-2)[..., 1:].flip(-1)


#: the largest float32 score temporary of :func:`last_query_sums` (its softmax and skewed copy are as large)
SCORE_CHUNK_BYTES = 512 * 2**20


def last_query_sums(
    query: torch.Tensor, key: torch.Tensor, last: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The softmax attention (fp32, causal among them) of the last ``last`` queries over all keys, summed
    per key and per diagonal offset: ``(vertical, slash)``, each ``[batch, q_heads, n]`` fp32.

    A key head's group of query heads is one ``[group x last, d]`` matrix, so the scores of several key
    heads are one batched matmul with no broadcast copy of the keys; as many key heads at a time as keep
    the scores within :data:`SCORE_CHUNK_BYTES` (all of them at 32k for an 8B model: a handful of kernel
    launches instead of a loop per key head, which left the GPU waiting on the host).
    """
    b, heads, n, d = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    m = min(last, n)
    future = torch.ones(m, m, dtype=torch.bool, device=query.device).triu(1)  # among the last m: key after query
    queries = query[:, :, n - m :].reshape(b, kv_heads, group * m, d)
    vertical = torch.empty(b, kv_heads, group, n, dtype=torch.float32, device=query.device)
    slash = torch.empty_like(vertical)
    step = max(1, min(kv_heads, SCORE_CHUNK_BYTES // (b * group * m * n * 4)))
    for first in range(0, kv_heads, step):
        heads_of = slice(first, first + step)
        scores = (queries[:, heads_of] @ key[:, heads_of].transpose(-1, -2)).float().mul_(scale)
        scores = scores.view(b, -1, group, m, n)
        scores[..., n - m :].masked_fill_(future, float("-inf"))
        attention = scores.softmax(dim=-1)
        vertical[:, heads_of] = attention.sum(-2)
        slash[:, heads_of] = diagonal_sums(attention)
    return vertical.view(b, heads, n), slash.view(b, heads, n)


# from tokens to blocks -----------------------------------------------------------------------------
def pool_blocks(values: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[..., n]`` per-key values -> ``[..., blocks]`` sums per key block."""
    n = values.shape[-1]
    blocks = num_blocks(n, block_size)
    padded = torch.nn.functional.pad(values, (0, blocks * block_size - n))
    return padded.view(*values.shape[:-1], blocks, block_size).sum(-1)


def pool_distances(values: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[..., n]`` per-offset values -> ``[..., blocks]`` per block distance.

    A diagonal at offset ``o = d * block_size + r`` runs through ``block_size - r`` rows of each query block
    in key block distance ``d`` and ``r`` rows in distance ``d + 1``; its value is split in that ratio.
    """
    n = values.shape[-1]
    blocks = num_blocks(n, block_size)
    padded = torch.nn.functional.pad(values, (0, blocks * block_size - n))
    tiles = padded.view(*values.shape[:-1], blocks, block_size)
    near = (block_size - torch.arange(block_size, device=values.device, dtype=values.dtype)) / block_size
    out = (tiles * near).sum(-1)
    out[..., 1:] += (tiles * (1 - near)).sum(-1)[..., :-1]
    return out


def column_blocks(columns: torch.Tensor, block_size: int, blocks: int) -> torch.Tensor:
    """``[..., k]`` key positions -> ``[..., blocks]`` booleans, True at the key blocks holding them."""
    out = torch.zeros(*columns.shape[:-1], blocks, dtype=torch.bool, device=columns.device)
    return out.scatter_(-1, columns // block_size, True)


def offset_distances(offsets: torch.Tensor, block_size: int, blocks: int) -> torch.Tensor:
    """``[..., k]`` diagonal offsets -> ``[..., blocks]`` booleans, True at every block distance they cross
    (``o // block_size``, and the next one when ``o`` is not a multiple of the block size)."""
    near = offsets // block_size
    far = near + (offsets % block_size > 0).long()
    out = torch.zeros(*offsets.shape[:-1], blocks + 1, dtype=torch.bool, device=offsets.device)
    return out.scatter_(-1, near, True).scatter_(-1, far, True)[..., :blocks]


def vertical_slash_grid(columns: torch.Tensor, diagonals: torch.Tensor) -> torch.Tensor:
    """Per key block ``columns`` and per block distance ``diagonals`` (``[..., blocks]``) -> the block grid
    ``[..., blocks, blocks]``: ``columns[k] | diagonals[q - k]`` for booleans, ``columns[k] + diagonals[q - k]``
    for scores (entries right of the diagonal are meaningless: every consumer drops them)."""
    blocks = columns.shape[-1]
    ids = torch.arange(blocks, device=columns.device)
    by_distance = diagonals[..., (ids[:, None] - ids[None, :]).clamp(min=0)]
    by_column = columns[..., None, :].expand_as(by_distance)
    return by_column | by_distance if columns.dtype == torch.bool else by_column + by_distance


# ranking rules -------------------------------------------------------------------------------------
def top_k_mask(scores: torch.Tensor, counts: torch.Tensor, order: torch.Tensor | None = None) -> torch.Tensor:
    """``[..., n]`` booleans, True at the ``counts[...]`` highest of ``scores`` (a count per row); ``order``:
    ``scores``' descending order when the caller has it already."""
    if order is None:
        order = scores.argsort(dim=-1, descending=True)
    ranks_kept = torch.arange(scores.shape[-1], device=scores.device) < counts[..., None]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, order, ranks_kept)


def cover_count(values: torch.Tensor, gamma: float, ranked: torch.Tensor | None = None) -> torch.Tensor:
    """Per row of ``values`` ``[..., n]`` (non-negative), the fewest entries, highest first, whose sum
    reaches ``gamma`` of the row's total (FlexPrefill's cumulative-attention rule): ``[...]`` long.
    ``gamma`` 1 is every entry, so that rounding in the running sum cannot drop the smallest ones.
    ``ranked``: ``values`` sorted descending, when the caller has it already."""
    n = values.shape[-1]
    if gamma >= 1:
        return torch.full(values.shape[:-1], n, dtype=torch.long, device=values.device)
    running = (values.sort(dim=-1, descending=True).values if ranked is None else ranked).cumsum(-1)
    return ((running < gamma * running[..., -1:]).sum(-1) + 1).clamp(max=n)


def cover_mask(values: torch.Tensor, gamma: float) -> torch.Tensor:
    """``[..., n]`` booleans, True at the :func:`cover_count` highest of ``values``, from one sort."""
    ranked, order = values.sort(dim=-1, descending=True)
    return top_k_mask(values, cover_count(values, gamma, ranked), order)


def top_density(scores: torch.Tensor, density: float) -> torch.Tensor:
    """The ``round(density x causal blocks)`` highest-scored causal blocks of each head of ``scores``
    ``[b, h, blocks, blocks]``, the sink and the diagonal always among them (so never fewer than those):
    a block grid for :meth:`~.blocks.BlockSelection.from_grid` with that density per head."""
    blocks = scores.shape[-1]
    forced = forced_blocks(blocks, scores.device)
    ranked = scores.float().masked_fill(~causal_blocks(blocks, scores.device), float("-inf"))
    ranked = ranked.masked_fill(forced, float("inf"))
    k = max(round(density * causal_block_count(blocks)), int(forced.sum()))
    flat = ranked.flatten(-2)
    keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(-1, flat.topk(k, dim=-1).indices, True)
    return keep.view_as(scores)


# MInference --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MInferenceEstimate:
    """The last queries' attention summed per key (``vertical``) and per offset (``slash``): ``[b, h, n]``."""

    vertical: torch.Tensor
    slash: torch.Tensor
    block_size: int

    @classmethod
    def of(cls, query: torch.Tensor, key: torch.Tensor, scale: float, block_size: int,
           last_queries: int) -> MInferenceEstimate:
        return cls(*last_query_sums(query, key, last_queries, scale), block_size)

    def keep(self, vertical_size: int, slash_size: int) -> torch.Tensor:
        """The block grid of the top ``vertical_size`` columns and top ``slash_size`` diagonals (the sink
        columns and the local diagonals first)."""
        n, size = self.vertical.shape[-1], self.block_size
        blocks = num_blocks(n, size)
        forced_columns = torch.zeros(n, dtype=torch.bool, device=self.vertical.device)
        forced_columns[:MINFERENCE_SINK_COLUMNS] = True
        forced_offsets = torch.zeros_like(forced_columns)
        forced_offsets[:MINFERENCE_LOCAL_DIAGONALS] = True
        vertical = self.vertical.masked_fill(forced_columns, float("inf"))
        slash = self.slash.masked_fill(forced_offsets, float("inf"))
        columns = vertical.topk(min(vertical_size, n), dim=-1).indices
        offsets = slash.topk(min(slash_size, n), dim=-1).indices
        return vertical_slash_grid(column_blocks(columns, size, blocks), offset_distances(offsets, size, blocks))

    def scores(self) -> torch.Tensor:
        """Per block, the column mass of its key block plus the diagonal mass of its distance (the always-kept
        columns and diagonals are the budget rule's, not part of the estimate)."""
        return vertical_slash_grid(pool_blocks(self.vertical, self.block_size),
                                   pool_distances(self.slash, self.block_size))


# FlexPrefill -------------------------------------------------------------------------------------------
def block_means(x: torch.Tensor, block_size: int) -> torch.Tensor:
    """``[b, h, n, d]`` -> ``[b, h, blocks, d]`` fp32, the mean of each block's tokens (a partial last block's
    over the tokens it has). Summed in fp32 from views of ``x``: no fp32 or padded copy of it."""
    b, h, n, d = x.shape
    full = n // block_size
    sums = x[:, :, : full * block_size].reshape(b, h, full, block_size, d).sum(-2, dtype=torch.float32)
    means = sums / block_size
    if n > full * block_size:  # the partial last block
        tail = x[:, :, full * block_size :].sum(-2, keepdim=True, dtype=torch.float32) / (n - full * block_size)
        means = torch.cat([means, tail], dim=2)
    return means


def sqrt_js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The square root of the Jensen-Shannon divergence (natural log) of distributions over the last dim."""
    middle = (p + q) / 2

    def kl_to_middle(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a > 0, a * (a.log() - middle.log()), 0.0).sum(-1)

    return (0.5 * kl_to_middle(p) + 0.5 * kl_to_middle(q)).clamp(min=0).sqrt()


@dataclass(frozen=True)
class FlexPrefillEstimate:
    """FlexPrefill's per-head estimates: the last block's attention per key and per offset (token level,
    each a distribution, ``[b, h, n]``), the same pooled to key blocks and block distances
    (``[b, h, blocks]``), the pattern test's outcome (``query_aware``, ``[b, h]``) and the pooled estimate of
    every query block over every key block (``[b, h, blocks, blocks]``, each row a causal softmax)."""

    vertical: torch.Tensor
    slash: torch.Tensor
    columns: torch.Tensor
    diagonals: torch.Tensor
    query_aware: torch.Tensor
    pooled: torch.Tensor
    block_size: int

    @classmethod
    def of(cls, query: torch.Tensor, key: torch.Tensor, scale: float, block_size: int,
           tau: float) -> FlexPrefillEstimate:
        n = query.shape[2]
        last = min(block_size, n)
        vertical, slash = last_query_sums(query, key, block_size, scale)
        vertical, slash = vertical / last, slash / last  # mean over the last block's queries: distributions
        columns = pool_blocks(vertical, block_size)  # the "true" pooled distribution of the last block
        group = query.shape[1] // key.shape[1]
        key_means = block_means(key, block_size).repeat_interleave(group, dim=1)
        last_mean = query[:, :, n - last :].float().mean(-2, keepdim=True)
        estimate = ((last_mean @ key_means.transpose(-1, -2)) * scale).softmax(-1)[..., 0, :]
        query_aware = sqrt_js_divergence(estimate, columns) < tau
        blocks = columns.shape[-1]
        logits = (block_means(query, block_size) @ key_means.transpose(-1, -2)) * scale
        pooled = logits.masked_fill(~causal_blocks(blocks, query.device), float("-inf")).softmax(-1)
        return cls(vertical, slash, columns, pool_distances(slash, block_size), query_aware, pooled, block_size)

    def keep(self, gamma: float, min_budget: int) -> torch.Tensor:
        """The kept-block grid: per head the vertical-slash blocks that cover ``gamma`` (query-aware heads:
        only the minimum budget of them, plus their pooled blocks covering ``gamma``)."""
        size = self.block_size
        blocks = self.columns.shape[-1]
        least = min(num_blocks(min_budget, size), blocks)

        def budget(tokens: torch.Tensor) -> torch.Tensor:
            needed = -(-cover_count(tokens, gamma) // size)  # tokens to cover gamma, rounded up to blocks
            return torch.where(self.query_aware, least, needed.clamp(least, blocks))

        columns = self.columns.clone()
        columns[..., 0] = float("inf")  # the sink block and the diagonal count towards the budget, first
        diagonals = self.diagonals.clone()
        diagonals[..., 0] = float("inf")
        grid = vertical_slash_grid(top_k_mask(columns, budget(self.vertical)),
                                   top_k_mask(diagonals, budget(self.slash)))
        pooled = cover_mask(self.pooled.flatten(-2), gamma).view_as(self.pooled)
        return grid | (pooled & self.query_aware[..., None, None])

    def scores(self) -> torch.Tensor:
        """Per block, its estimated attention under the head's pattern: the pooled estimate for
        query-aware heads, column plus diagonal mass for vertical-slash ones."""
        vertical_slash = vertical_slash_grid(self.columns, self.diagonals)
        return torch.where(self.query_aware[..., None, None], self.pooled, vertical_slash)


__all__ = [
    "MINFERENCE_LOCAL_DIAGONALS",
    "MINFERENCE_SINK_COLUMNS",
    "FlexPrefillEstimate",
    "MInferenceEstimate",
    "column_blocks",
    "cover_count",
    "cover_mask",
    "diagonal_sums",
    "last_query_sums",
    "offset_distances",
    "pool_blocks",
    "pool_distances",
    "sqrt_js_divergence",
    "top_density",
    "top_k_mask",
    "vertical_slash_grid",
]
