"""Which key blocks each query block attends to: :class:`BlockSelection`, the one currency between the
estimators (:mod:`.estimate`) and the kernels (:mod:`.kernel`).

Why blocks, and why indices: a block-sparse kernel skips whole ``block_size x block_size`` tiles of the
attention matrix, so what it needs per (batch, head, query block) is the list of key blocks to visit,
the layout FlexAttention's ``BlockMask.from_kv_blocks`` takes (a count and ascending indices). A
selection is therefore built from a block-level grid (``[batch, heads, q_blocks, k_blocks]`` booleans,
made by scattering block indices), never from a token-level mask, which at 128k tokens would be
16 G entries per head. :meth:`BlockSelection.from_mask` exists for tests only.

Every selection is causal (no key block right of the diagonal) and always holds the sink (the first
key block: the attention sink every head leans on) and the local band (the diagonal block, whose
causal triangle holds each query's own and nearest keys), so every query row attends to at least
itself and the softmax is never empty. A prompt whose length is not a multiple of the block size has
a partial last block; its padded positions are never attended (the kernels mask them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def num_blocks(n_tokens: int, block_size: int) -> int:
    """Blocks covering ``n_tokens`` tokens, the last one possibly partial."""
    return -(-n_tokens // block_size)


def causal_block_count(n_blocks: int) -> int:
    """Blocks on or below the diagonal of an ``n_blocks x n_blocks`` grid: what dense causal attention
    computes, the denominator of a selection's density."""
    return n_blocks * (n_blocks + 1) // 2


def causal_blocks(n_blocks: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n_blocks, n_blocks]`` booleans, True on and below the diagonal."""
    return torch.ones(n_blocks, n_blocks, dtype=torch.bool, device=device).tril()


def forced_blocks(n_blocks: int, device: torch.device | None = None) -> torch.Tensor:
    """``[n_blocks, n_blocks]`` booleans, True at the blocks every selection keeps: the sink (key block 0)
    and the local band (the diagonal)."""
    forced = torch.eye(n_blocks, dtype=torch.bool, device=device)
    forced[:, 0] = True
    return forced


@dataclass(frozen=True)
class BlockSelection:
    """Per (batch, head, query block), the key blocks attended to (FlexAttention's kv-block layout).

    Attributes:
        counts: ``[batch, heads, q_blocks]`` int32, how many key blocks each query block keeps.
        indices: ``[batch, heads, q_blocks, k_blocks]`` int32, the kept key blocks in ascending order in
            the first ``counts`` entries (the last of them is the diagonal block); the rest is padding.
        block_size: tokens per block (query and key blocks alike).
        seq_len: tokens of the prompt (queries and keys alike: a prefill attends to itself).
    """

    counts: torch.Tensor
    indices: torch.Tensor
    block_size: int
    seq_len: int

    @property
    def num_blocks(self) -> int:
        return self.counts.shape[-1]

    @classmethod
    def from_grid(cls, keep: torch.Tensor, block_size: int, seq_len: int) -> BlockSelection:
        """The selection of the key blocks that ``keep`` (``[batch, heads, q_blocks, k_blocks]`` booleans,
        one per block, set from block indices) marks, restricted to the causal blocks, plus the sink and
        the diagonal block of every row."""
        n = num_blocks(seq_len, block_size)
        if keep.dim() != 4 or keep.shape[-2:] != (n, n):
            raise ValueError(f"keep: expected [batch, heads, {n}, {n}] (blocks of {block_size} over {seq_len} "
                             f"tokens), got {tuple(keep.shape)}")
        keep = (keep.bool() & causal_blocks(n, keep.device)) | forced_blocks(n, keep.device)
        counts = keep.sum(-1, dtype=torch.int32)
        # kept blocks first, each group in ascending order: sort by (not kept, block index)
        order = torch.arange(n, device=keep.device) + (~keep).to(torch.long) * n
        indices = order.sort(dim=-1).indices.to(torch.int32)
        return cls(counts, indices, block_size, seq_len)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, block_size: int) -> BlockSelection:
        """For tests: the blocks in which a token-level ``mask`` (``[batch, heads, n, n]`` booleans) allows
        any (query, key) pair, as :meth:`from_grid` completes them."""
        b, h, n, _ = mask.shape
        blocks = num_blocks(n, block_size)
        padded = torch.zeros(b, h, blocks * block_size, blocks * block_size, dtype=torch.bool, device=mask.device)
        padded[..., :n, :n] = mask
        tiles = padded.view(b, h, blocks, block_size, blocks, block_size)
        return cls.from_grid(tiles.any(dim=5).any(dim=3), block_size, n)

    def grid(self) -> torch.Tensor:
        """``[batch, heads, q_blocks, k_blocks]`` booleans, True where a key block is kept."""
        n = self.num_blocks
        valid = torch.arange(n, device=self.counts.device) < self.counts[..., None]
        target = torch.where(valid, self.indices.long(), n)  # padding goes to a spare column, then dropped
        grid = torch.zeros(*self.counts.shape, n + 1, dtype=torch.bool, device=self.counts.device)
        return grid.scatter_(-1, target, True)[..., :n]

    def token_mask(self, first_block: int = 0, end_block: int | None = None) -> torch.Tensor:
        """The (query, key) pairs the selection computes for the queries of query blocks
        ``first_block .. end_block - 1`` (all by default): ``[batch, heads, rows, seq_len]`` booleans, the
        kept blocks expanded to tokens AND causal."""
        end_block = self.num_blocks if end_block is None else end_block
        size, n = self.block_size, self.seq_len
        rows = torch.arange(first_block * size, min(end_block * size, n), device=self.counts.device)
        blocks = self.grid()[..., first_block:end_block, :]
        tokens = blocks.repeat_interleave(size, dim=-2)[..., : rows.numel(), :]
        tokens = tokens.repeat_interleave(size, dim=-1)[..., :n]
        return tokens & (rows[:, None] >= torch.arange(n, device=rows.device))

    def densities(self) -> torch.Tensor:
        """``[batch, heads]`` float: the fraction of the causal blocks each head computes."""
        return self.counts.sum(-1, dtype=torch.float32) / causal_block_count(self.num_blocks)

    def density(self) -> float:
        """The fraction of all heads' causal blocks computed (1.0: dense causal attention)."""
        return float(self.densities().mean())


__all__ = ["BlockSelection", "causal_block_count", "causal_blocks", "forced_blocks", "num_blocks"]
